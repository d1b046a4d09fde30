#pragma once
// What a dtrainer::Error thrown by `f` says ("" when nothing is thrown): for tests that check an
// error message names its field.

#include <functional>
#include <string>

#include "dtrainer/core/error.h"

namespace dtrainer::test {

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace dtrainer::test
