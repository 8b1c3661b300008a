// SPDX-License-Identifier: MIT
#include "json.h"

#include <cstdlib>
#include <stdexcept>

namespace kldm::json {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}

  Value document() {
    Value v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  const std::string& s_;
  size_t i_ = 0;

  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("invalid JSON: " + why + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t'))
      ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool literal(const char* word) {
    size_t n = std::char_traits<char>::length(word);
    if (s_.compare(i_, n, word) == 0) {
      i_ += n;
      return true;
    }
    return false;
  }

  Value value() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    Value v;
    char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.type = Value::Type::Object;
      if (eat('}')) return v;
      do {
        ws();
        std::string key = str();
        expect(':');
        v.object[key] = value();
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i_;
      v.type = Value::Type::Array;
      if (eat(']')) return v;
      do {
        v.array.push_back(value());
      } while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.type = Value::Type::String;
      v.string = str();
    } else if (literal("true")) {
      v.type = Value::Type::Bool;
      v.boolean = true;
    } else if (literal("false")) {
      v.type = Value::Type::Bool;
    } else if (literal("null")) {
      v.type = Value::Type::Null;
    } else if (literal("NaN") || literal("Infinity") || literal("-Infinity")) {
      fail("NaN/Infinity are not allowed");
    } else {
      const char* begin = s_.c_str() + i_;
      char* end = nullptr;
      v.number = std::strtod(begin, &end);  // C locale: the manifest is written with '.' decimals
      if (end == begin) fail("unexpected character");
      v.type = Value::Type::Number;
      i_ += static_cast<size_t>(end - begin);
    }
    return v;
  }

  std::string str() {
    if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) fail("unterminated escape");
      char e = s_[i_++];
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u': {
          if (i_ + 4 > s_.size()) fail("short \\u escape");
          unsigned code = static_cast<unsigned>(std::stoul(s_.substr(i_, 4), nullptr, 16));
          i_ += 4;
          // UTF-8 for the basic plane (paths in the manifest); surrogate pairs are not needed.
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default:
          out += e;  // \" \\ \/
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
};

[[noreturn]] void type_error(const std::string& what, const char* want) {
  throw std::runtime_error("manifest: " + what + " must be " + want);
}

}  // namespace

bool Value::has(const std::string& key) const {
  return type == Type::Object && object.count(key) > 0;
}

const Value& Value::at(const std::string& key) const {
  if (type != Type::Object) type_error(key, "inside an object");
  auto it = object.find(key);
  if (it == object.end()) throw std::runtime_error("manifest: missing key '" + key + "'");
  return it->second;
}

double Value::as_number(const std::string& what) const {
  if (type != Type::Number) type_error(what, "a number");
  return number;
}

long long Value::as_int(const std::string& what) const {
  double v = as_number(what);
  if (v != static_cast<double>(static_cast<long long>(v))) type_error(what, "an integer");
  return static_cast<long long>(v);
}

bool Value::as_bool(const std::string& what) const {
  if (type != Type::Bool) type_error(what, "true or false");
  return boolean;
}

const std::string& Value::as_string(const std::string& what) const {
  if (type != Type::String) type_error(what, "a string");
  return string;
}

std::vector<double> Value::as_numbers(const std::string& what) const {
  if (type != Type::Array) type_error(what, "an array of numbers");
  std::vector<double> out;
  out.reserve(array.size());
  for (const auto& v : array) out.push_back(v.as_number(what));
  return out;
}

const Value& Fields::at(const std::string& key) const {
  if (!v_.has(key)) {
    if (v_.type != Value::Type::Object) type_error(path_.empty() ? key : path_, "an object");
    throw std::runtime_error("manifest: missing key '" + path_ + key + "'");
  }
  return v_.object.at(key);
}

Value parse(const std::string& text) { return Parser(text).document(); }

}  // namespace kldm::json
