// Out-of-line formatting for TFO_CHECK (csrc/include/error_message.h): compiled by the host
// C++ compiler, like the rest of PyTorch's error reporting.
#include "include/error_message.h"

#include <c10/util/Exception.h>

#include <sstream>

namespace flashinfer_ops {

ErrorMessage::ErrorMessage() : text_(std::make_unique<std::string>()) {}
ErrorMessage::~ErrorMessage() = default;

ErrorMessage& ErrorMessage::operator<<(const char* s) {
  *text_ += s;
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(const std::string& s) {
  *text_ += s;
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(long long v) {
  *text_ += std::to_string(v);
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(long v) { return *this << static_cast<long long>(v); }
ErrorMessage& ErrorMessage::operator<<(int v) { return *this << static_cast<long long>(v); }
ErrorMessage& ErrorMessage::operator<<(unsigned long v) {
  *text_ += std::to_string(v);
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(double v) {
  std::ostringstream out;
  out << v;
  *text_ += out.str();
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(bool v) {
  *text_ += v ? "true" : "false";
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(c10::ScalarType t) {
  *text_ += c10::toString(t);
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(c10::IntArrayRef sizes) {
  std::ostringstream out;
  out << sizes;
  *text_ += out.str();
  return *this;
}
ErrorMessage& ErrorMessage::operator<<(const c10::Device& d) {
  *text_ += d.str();
  return *this;
}

void ErrorMessage::raise(const char* file, int line) const {
  throw c10::Error({__func__, file, static_cast<uint32_t>(line)}, *text_);
}

}  // namespace flashinfer_ops
