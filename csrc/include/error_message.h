// Argument errors of the GPU bindings, formatted and raised by code compiled with the host C++
// compiler (csrc/common/error_message.cpp). The bindings are compiled by nvcc/hipcc; there,
// ostream-based formatting (TORCH_CHECK with numbers in its message) crashed the process
// instead of raising, on one toolchain. TFO_CHECK formats through out-of-line functions only,
// and raises the same c10::Error (RuntimeError in Python) as TORCH_CHECK.
//
//   TFO_CHECK(cond, "op: x must be ", n, ", got ", t.sizes());
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <memory>
#include <string>

namespace flashinfer_ops {

class ErrorMessage {
 public:
  ErrorMessage();
  ~ErrorMessage();
  ErrorMessage& operator<<(const char* s);
  ErrorMessage& operator<<(const std::string& s);
  ErrorMessage& operator<<(long long v);
  ErrorMessage& operator<<(long v);
  ErrorMessage& operator<<(int v);
  ErrorMessage& operator<<(unsigned long v);
  ErrorMessage& operator<<(double v);
  ErrorMessage& operator<<(bool v);
  ErrorMessage& operator<<(c10::ScalarType t);
  ErrorMessage& operator<<(c10::IntArrayRef sizes);
  ErrorMessage& operator<<(const c10::Device& d);
  [[noreturn]] void raise(const char* file, int line) const;

 private:
  std::unique_ptr<std::string> text_;
};

template <typename... Args>
[[noreturn]] void raise_error(const char* file, int line, const Args&... args) {
  ErrorMessage message;
  (message << ... << args);
  message.raise(file, line);
}

}  // namespace flashinfer_ops

#define TFO_CHECK(cond, ...)                                                      \
  do {                                                                            \
    if (!(cond)) ::flashinfer_ops::raise_error(__FILE__, __LINE__, __VA_ARGS__); \
  } while (false)
