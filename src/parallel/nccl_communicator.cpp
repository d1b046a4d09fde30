#include "dtrainer/parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#if DT_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

#include "dtrainer/core/error.h"
#include "collective_checks.h"
#include "dtrainer/parallel/watchdog.h"

namespace dtrainer::parallel {
namespace {

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error("communicator.nccl", std::string(what) + ": " + cudaGetErrorString(e));
}

void check_nccl(ncclResult_t r, const char* what, int rank) {
  if (r == ncclSuccess) return;
  std::string detail = ncclGetErrorString(r);
  if (const char* last = ncclGetLastError(nullptr); last && *last) detail += std::string(" (") + last + ")";
  throw Error("communicator.nccl", "rank " + std::to_string(rank) + ": " + what + " failed: " + detail);
}

// The stream LibTorch queues this device's work on. A CPU-only LibTorch (DT_NCCL=ON as a compile
// check) has none: the legacy default stream stands in, and no CUDA tensor can reach here anyway.
cudaStream_t caller_stream(int device) {
#if DT_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

// A timing-free event recorded on `stream`.
cudaEvent_t record_on(cudaStream_t stream) {
  cudaEvent_t e = nullptr;
  check_cuda(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
  check_cuda(cudaEventRecord(e, stream), "cudaEventRecord");
  return e;
}

// One collective queued on the communicator's stream. wait() makes the caller's stream wait for
// it and then queues the finishing step there (copy an fp32 staging buffer back to bf16); the
// tensors stay referenced until then, so LibTorch's allocator cannot hand their memory to later
// work that is not ordered after the collective.
class NcclWork final : public Work {
 public:
  NcclWork(int device, cudaEvent_t done, std::vector<torch::Tensor> keep_alive, std::function<void()> finish)
      : device_(device), done_event_(done), keep_(std::move(keep_alive)), finish_(std::move(finish)) {}
  void wait() override {
    if (waited_) return;
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    check_cuda(cudaStreamWaitEvent(caller_stream(device_), done_event_, 0), "cudaStreamWaitEvent");
    if (finish_) finish_();
    keep_.clear();
    waited_ = true;
  }
  bool test() override {
    if (waited_) return true;
    const cudaError_t q = cudaEventQuery(done_event_);
    if (q == cudaErrorNotReady) return false;
    check_cuda(q, "cudaEventQuery");
    return true;
  }
  ~NcclWork() override {
    try {
      wait();
    } catch (...) {  // a destructor must not throw; the error resurfaces at the next CUDA call
    }
    cudaEventDestroy(done_event_);  // safe while pending: released once the event completes
  }
  NcclWork(const NcclWork&) = delete;
  NcclWork& operator=(const NcclWork&) = delete;

 private:
  int device_;
  cudaEvent_t done_event_;
  std::vector<torch::Tensor> keep_;
  std::function<void()> finish_;
  bool waited_ = false;
};

// What NCCL moves: the tensor itself for native types, an fp32 copy for bf16 / fp16 (the
// Communicator contract reduces those in fp32, as the MPI backend does).
struct Wire {
  torch::Tensor data;
  ncclDataType_t type;
  bool staged;
};

size_t count(const torch::Tensor& t) { return static_cast<size_t>(t.numel()); }

class NcclCommunicator final : public Communicator {
 public:
  // owned: bootstrap_ was duplicated for this object and is freed with it.
  NcclCommunicator(MPI_Comm bootstrap, bool owned, int device) : bootstrap_(bootstrap), owned_(owned), device_(device) {
    MPI_Comm_rank(bootstrap_, &rank_);
    MPI_Comm_size(bootstrap_, &world_);
    int devices = 0;
    check_cuda(cudaGetDeviceCount(&devices), "cudaGetDeviceCount");
    if (device_ < 0 || device_ >= devices)
      throw Error("communicator.nccl", "rank " + std::to_string(rank_) + " asked for CUDA device " +
                                           std::to_string(device_) + " but this node has " + std::to_string(devices));
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank_ == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId", rank_);
    if (MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, bootstrap_) != MPI_SUCCESS)
      throw Error("communicator.nccl",
                  "rank " + std::to_string(rank_) + ": broadcasting the ncclUniqueId over MPI failed");
    check_nccl(ncclCommInitRank(&comm_, world_, id, rank_), "ncclCommInitRank", rank_);
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }
  ~NcclCommunicator() override {
    if (unwinding()) {
      // A failing rank: its peers may never join the queued collectives, so waiting for them
      // (stream sync, ncclCommDestroy) could hang; abort the communicator instead.
      if (comm_) ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    if (stream_) {
      if (comm_) cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
    if (comm_) ncclCommDestroy(comm_);
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owned_ && !finalized) MPI_Comm_free(&bootstrap_);
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // A new NCCL communicator (its own unique id, bootstrapped over a duplicate of the MPI
  // communicator) with its own stream.
  std::unique_ptr<Communicator> duplicate() const override {
    MPI_Comm dup = MPI_COMM_NULL;
    if (MPI_Comm_dup(bootstrap_, &dup) != MPI_SUCCESS) throw Error("communicator.nccl", "MPI_Comm_dup failed");
    return std::make_unique<NcclCommunicator>(dup, true, device_);
  }
  int rank() const override { return rank_; }
  int world() const override { return world_; }
  const char* backend() const override { return "nccl"; }

  std::shared_ptr<Work> all_reduce(torch::Tensor t, ReduceOp op, bool async) override {
    Wire w = wire(t, "all_reduce");
    return launch(
        "all_reduce", {t, w.data}, async,
        [&] {
          return ncclAllReduce(w.data.data_ptr(), w.data.data_ptr(), count(w.data), w.type,
                               nccl_op(op, w, "all_reduce"), comm_, stream_);
        },
        copy_back(t, w));
  }

  std::shared_ptr<Work> reduce_scatter(torch::Tensor in, torch::Tensor out, ReduceOp op, bool async) override {
    check_whole_and_part("reduce_scatter", in, out, world_, /*whole_is_input=*/true);
    Wire wi = wire(in, "reduce_scatter"), wo = wire(out, "reduce_scatter");
    return launch(
        "reduce_scatter", {in, out, wi.data, wo.data}, async,
        [&] {
          return ncclReduceScatter(wi.data.data_ptr(), wo.data.data_ptr(), count(wo.data), wi.type,
                                   nccl_op(op, wi, "reduce_scatter"), comm_, stream_);
        },
        copy_back(out, wo));
  }

  std::shared_ptr<Work> all_gather(torch::Tensor in, torch::Tensor out, bool async) override {
    check_whole_and_part("all_gather", out, in, world_, /*whole_is_input=*/false);
    Wire wi = wire(in, "all_gather", /*reduce=*/false), wo = wire(out, "all_gather", /*reduce=*/false);
    return launch(
        "all_gather", {in, out}, async,
        [&] { return ncclAllGather(wi.data.data_ptr(), wo.data.data_ptr(), count(wi.data), wi.type, comm_, stream_); },
        nullptr);
  }

  std::shared_ptr<Work> broadcast(torch::Tensor t, int root, bool async) override {
    if (root < 0 || root >= world_)
      throw Error("communicator.broadcast", "root " + std::to_string(root) + " is not a rank");
    Wire w = wire(t, "broadcast", /*reduce=*/false);
    return launch(
        "broadcast", {t}, async,
        [&] {
          return ncclBroadcast(w.data.data_ptr(), w.data.data_ptr(), count(w.data), w.type, root, comm_, stream_);
        },
        nullptr);
  }

  // Every rank's queued collectives finish, then the ranks meet.
  void barrier() override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    check_cuda(cudaStreamSynchronize(caller_stream(device_)), "cudaStreamSynchronize");
    note_collective();
    MPI_Barrier(bootstrap_);
  }

 private:
  // Checks a tensor and picks its wire type. Moving data (gather, broadcast) needs no fp32
  // staging: NCCL copies bf16 / fp16 bits as they are.
  Wire wire(const torch::Tensor& t, const char* what, bool reduce = true) const {
    const std::string where = std::string("communicator.") + what;
    if (!t.defined() || !t.device().is_cuda() || t.device().index() != device_)
      throw Error(where, "the NCCL backend needs CUDA tensors on cuda:" + std::to_string(device_));
    if (!t.is_contiguous()) throw Error(where, "tensor must be contiguous");
    switch (t.scalar_type()) {
      case torch::kFloat32: return {t, ncclFloat32, false};
      case torch::kFloat64: return {t, ncclFloat64, false};
      case torch::kInt64: return {t, ncclInt64, false};
      case torch::kInt32: return {t, ncclInt32, false};
      case torch::kBFloat16:
        return reduce ? Wire{t.to(torch::kFloat32), ncclFloat32, true} : Wire{t, ncclBfloat16, false};
      case torch::kFloat16:
        return reduce ? Wire{t.to(torch::kFloat32), ncclFloat32, true} : Wire{t, ncclFloat16, false};
      default: throw Error(where, std::string("unsupported dtype ") + c10::toString(t.scalar_type()));
    }
  }

  static ncclRedOp_t nccl_op(ReduceOp op, const Wire& w, const char* what) {
    if (op == ReduceOp::kSum) return ncclSum;
    if (w.type == ncclInt32 || w.type == ncclInt64)
      throw Error(std::string("communicator.") + what,
                  "an average of integer tensors is not defined; reduce with kSum");
    return ncclAvg;
  }

  static std::function<void()> copy_back(torch::Tensor dst, const Wire& w) {
    if (!w.staged) return nullptr;
    torch::Tensor src = w.data;
    return [dst, src]() mutable { dst.copy_(src); };
  }

  // Orders the communicator's stream after the caller's queued work (which produced the inputs),
  // queues the collective, and records its completion.
  template <class Call>
  std::shared_ptr<Work> launch(const char* what, std::vector<torch::Tensor> keep, bool async, Call&& call,
                               std::function<void()> finish) {
    check_cuda(cudaSetDevice(device_), "cudaSetDevice");
    cudaEvent_t inputs_ready = record_on(caller_stream(device_));
    const cudaError_t waited = cudaStreamWaitEvent(stream_, inputs_ready, 0);
    cudaEventDestroy(inputs_ready);
    check_cuda(waited, "cudaStreamWaitEvent");
    note_collective();
    check_nccl(call(), what, rank_);
    auto work = std::make_shared<NcclWork>(device_, record_on(stream_), std::move(keep), std::move(finish));
    if (!async) work->wait();
    return work;
  }

  MPI_Comm bootstrap_;
  bool owned_ = false;
  int device_ = 0;
  int rank_ = 0, world_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

bool nccl_built() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm bootstrap, int device) {
  return std::make_unique<NcclCommunicator>(bootstrap, false, device);
}

}  // namespace dtrainer::parallel
