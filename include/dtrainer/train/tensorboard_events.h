#pragma once
// TensorBoard event files, written without TensorFlow: `tensorboard --logdir runs/` shows every
// scalar of a run. A file is a sequence of TFRecords (length as uint64 LE, the masked CRC-32C of
// the length, the payload, the masked CRC-32C of the payload); each payload is an `Event`
// protobuf (wall_time = 1: double, step = 2: int64, file_version = 3: string, summary = 5:
// Summary), a Summary holds `value = 1: Value` entries (tag = 1: string, simple_value = 2:
// float). The first event carries file_version "brain.Event:2". Tested against protobuf's own
// decoder (tests/train/read_tfevents.py).

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace dtrainer::train {

uint32_t crc32c(const void* data, size_t n);         // Castagnoli, reflected (as TFRecord)
uint32_t masked_crc32c(const void* data, size_t n);  // TFRecord's mask of it
std::string tfrecord(const std::string& payload);    // one framed record
std::string scalar_event(double wall_time, int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
std::string file_version_event(double wall_time);

// Appends events to DIR/events.out.tfevents.<seconds>.<host>.<pid> (a new file per writer: a
// resumed run adds a file, and TensorBoard drops the steps after the resume point of the old one
// when the new file's steps restart below them). Every write is flushed; a failed write throws
// Error naming the file.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalars(int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
  const std::string& path() const { return path_; }

 private:
  void write(const std::string& record);
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace dtrainer::train
