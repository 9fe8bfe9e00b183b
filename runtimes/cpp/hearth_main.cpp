// hearth's entrypoint for handler-only C++ functions.
//
// The builder compiles this file with the user's main.cpp included just above it, so the
// handler is in scope whichever of the two supported shapes it has:
//
//   std::string handler(const std::string& event);        // (or any std::string-like)
//   extern "C" const char* handler(const char* event);
//
// It supplies main(). The agent starts the program ahead of its invocation (a standby)
// with fd 0 = the invocation, fd 3 = the result pipe. main() writes 'R' on fd 3 at once,
// then reads fd 0 to its end: header lines `NAME=VALUE` (the invocation's environment:
// HEARTH_REQUEST_ID, HEARTH_DEADLINE_MS, HEARTH_ATTEMPT, OUTPUT_DIR), an empty line, then the event as
// JSON text. It sets those variables, calls the handler, and writes on fd 3 either
//
//   'O' + the returned text        (JSON when it parses, else taken as a string), or
//   'E' + type + '\0' + message    (an exception escaped the handler).
//
// Everything here lives in namespace hearth_entry or is main itself, so user code may
// use any other name.

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <exception>
#include <iostream>
#include <string>
#include <typeinfo>
#include <unistd.h>

namespace hearth_entry {

constexpr int kResultFd = 3;

// Writes all of `data` to `fd`, retrying short writes; false when the reader is gone.
inline bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

inline std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

// The handler's return value as text, whatever string-like type it has.
inline std::string text(const char* value) { return value ? std::string(value) : "null"; }
inline std::string text(char* value) { return value ? std::string(value) : "null"; }
template <typename R>
std::string text(const R& value) {
  return std::string(value);
}

// std::string handler(const std::string&) (preferred when both would fit).
template <typename E>
auto call(const E& event, int) -> decltype(text(handler(event))) {
  return text(handler(event));
}

// const char* handler(const char*).
template <typename E>
auto call(const E& event, long) -> decltype(text(handler(event.c_str()))) {
  return text(handler(event.c_str()));
}

inline std::string demangle(const char* name) {
  int status = 0;
  char* readable = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && readable) ? readable : name;
  std::free(readable);
  return out;
}

// The type of the exception being handled, readable ("std::invalid_argument").
inline std::string current_exception_type() {
  const std::type_info* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : "unknown exception";
}

inline void report_error(const std::string& type, const std::string& message) {
  std::string out = "E" + type;
  out.push_back('\0');
  out += message;
  write_all(kResultFd, out.data(), out.size());
}

// Sets each `NAME=VALUE` header line as an environment variable; returns the event.
inline std::string take_header(const std::string& input) {
  size_t pos = 0;
  while (pos < input.size()) {
    size_t end = input.find('\n', pos);
    if (end == std::string::npos) end = input.size();
    std::string line = input.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) return input.substr(pos < input.size() ? pos : input.size());
    size_t eq = line.find('=');
    if (eq != std::string::npos) {
      ::setenv(line.substr(0, eq).c_str(), line.substr(eq + 1).c_str(), 1);
    }
  }
  return std::string();
}

}  // namespace hearth_entry

int main() {
  using namespace hearth_entry;
  if (!write_all(kResultFd, "R", 1)) return 70;
  std::string event = take_header(read_all(0));
  std::string out;
  try {
    out = "O" + call(event, 0);
  } catch (const std::exception& e) {
    std::cout.flush();
    report_error(current_exception_type(), e.what());
    return 0;
  } catch (...) {
    std::cout.flush();
    report_error(current_exception_type(), "");
    return 0;
  }
  std::cout.flush();
  std::fflush(nullptr);
  write_all(kResultFd, out.data(), out.size());
  return 0;
}
