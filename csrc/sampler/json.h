// SPDX-License-Identifier: MIT
// A minimal JSON reader for the export manifest (objects, arrays, strings, numbers, booleans,
// null). Written here rather than taken from a library because the sampler must build wherever `pip
// install .` builds the ops: libtorch ships no JSON parser in its public headers, and a system
// package (nlohmann-json, RapidJSON) would be a new build dependency for one small file.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kldm::json {

class Value {
 public:
  enum class Type { Null, Bool, Number, String, Array, Object };

  Type type = Type::Null;
  bool boolean = false;
  double number = 0.0;
  std::string string;
  std::vector<Value> array;
  std::map<std::string, Value> object;

  bool is_null() const { return type == Type::Null; }
  bool has(const std::string& key) const;
  // Typed accessors throw std::runtime_error naming `what` (the key path) on a type mismatch.
  const Value& at(const std::string& key) const;
  double as_number(const std::string& what = "value") const;
  long long as_int(const std::string& what = "value") const;
  bool as_bool(const std::string& what = "value") const;
  const std::string& as_string(const std::string& what = "value") const;
  std::vector<double> as_numbers(const std::string& what = "value") const;
};

// An object read under its key path ("scheduler.ddpm_step."): each call site names a key once, and
// every error names the full path ("manifest: missing key 'scheduler.ddpm_step.noise_std'").
class Fields {
 public:
  explicit Fields(const Value& v, std::string path = "") : v_(v), path_(std::move(path)) {}
  Fields sub(const std::string& key) const { return Fields(at(key), path_ + key + "."); }
  bool has(const std::string& key) const { return v_.has(key); }
  const Value& at(const std::string& key) const;
  double number(const std::string& key) const { return at(key).as_number(path_ + key); }
  long long integer(const std::string& key) const { return at(key).as_int(path_ + key); }
  bool flag(const std::string& key) const { return at(key).as_bool(path_ + key); }
  const std::string& text(const std::string& key) const { return at(key).as_string(path_ + key); }
  std::vector<double> numbers(const std::string& key) const {
    return at(key).as_numbers(path_ + key);
  }

 private:
  const Value& v_;
  std::string path_;
};

// Parses `text`; throws std::runtime_error("invalid JSON: ... at offset N") on malformed input
// (bad \u escapes and lone surrogates included). Numbers are read with std::from_chars: the
// result does not depend on the host program's C locale. Tested by tests/test_json_reader.py.
Value parse(const std::string& text);

}  // namespace kldm::json
