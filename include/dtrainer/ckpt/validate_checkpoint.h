#pragma once
// The checkpoint validator (`dtckpt validate`): does a checkpoint hold everything a resume or an
// export will read, in the sizes its manifest promises, with sound values?

#include <string>
#include <vector>

namespace dtrainer::ckpt {

class CheckpointReader;

// Every problem found, one line each naming the unit and dataset (empty: sound). Structure: each
// unit's params, m and v (and ema, for all units or none) exist with the manifest's length; the
// parameter layout (format 2) covers each unit exactly. values: also read every dataset, one unit
// at a time, and require finite numbers (and v >= 0, AdamW's second moment).
std::vector<std::string> validate_checkpoint(const CheckpointReader& checkpoint, bool values);

}  // namespace dtrainer::ckpt
