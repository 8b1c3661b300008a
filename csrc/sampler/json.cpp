// SPDX-License-Identifier: MIT
#include "json.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <system_error>

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
  int depth_ = 0;
  // Nesting bound: the manifest nests 3 levels; a bound keeps a hostile file from exhausting the
  // stack through recursion.
  static constexpr int kMaxDepth = 64;

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
    if ((c == '{' || c == '[') && depth_ >= kMaxDepth) fail("nesting deeper than 64 levels");
    struct Nest {
      int& d;
      ~Nest() { --d; }
    } nest{++depth_};
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
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.type = Value::Type::Number;
      v.number = number();
    } else {
      fail("unexpected character");
    }
    return v;
  }

  bool digit() const { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }

  // A JSON number (-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?), checked against the grammar
  // first, then converted by std::from_chars: correctly rounded and independent of the C locale
  // (strtod reads "0.5" as 0 under a host program's setlocale(LC_NUMERIC, "de_DE")).
  double number() {
    const size_t start = i_;
    const bool negative = s_[i_] == '-';
    if (negative) ++i_;
    // Decimal magnitude, for telling underflow from overflow below: the value is about
    // 0.d1d2... x 10^(int_digits - leading_zeros + exponent).
    long long int_digits = 0, leading_zeros = 0, exponent = 0;
    bool nonzero = false;
    auto count = [&](bool fraction) {
      const char d = s_[i_];
      if (d != '0') nonzero = true;
      if (!fraction) ++int_digits;
      if (!nonzero) ++leading_zeros;
    };
    if (i_ < s_.size() && s_[i_] == '0') {
      count(false);
      ++i_;
    } else {
      if (!digit()) fail("expected a digit in a number");
      for (; digit(); ++i_) count(false);
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digit()) fail("expected a digit after the decimal point");
      for (; digit(); ++i_) count(true);
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      const bool minus = i_ < s_.size() && s_[i_] == '-';
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digit()) fail("expected a digit in the exponent");
      for (; digit(); ++i_) exponent = std::min(exponent * 10 + (s_[i_] - '0'), 1000000000LL);
      if (minus) exponent = -exponent;
    }
    double out = 0.0;
    const char* first = s_.data() + start;
    const char* last = s_.data() + i_;
    const auto [end, ec] = std::from_chars(first, last, out, std::chars_format::general);
    if (ec == std::errc::result_out_of_range && nonzero &&
        int_digits - leading_zeros + exponent < 0) {
      return negative ? -0.0 : 0.0;  // underflow: rounds to zero, as Python's json reads it
    }
    if (ec == std::errc::result_out_of_range || !std::isfinite(out)) {
      i_ = start;
      fail("number out of range");
    }
    if (ec != std::errc() || end != last) {
      i_ = start;
      fail("malformed number");
    }
    return out;
  }

  // Four hex digits of a \u escape, or a clear error.
  unsigned hex4() {
    if (i_ + 4 > s_.size()) fail("truncated \\u escape (needs 4 hex digits)");
    unsigned code = 0;
    for (int k = 0; k < 4; ++k) {
      const char h = s_[i_];
      unsigned d;
      if (h >= '0' && h <= '9') {
        d = static_cast<unsigned>(h - '0');
      } else if (h >= 'a' && h <= 'f') {
        d = static_cast<unsigned>(h - 'a' + 10);
      } else if (h >= 'A' && h <= 'F') {
        d = static_cast<unsigned>(h - 'A' + 10);
      } else {
        fail("bad \\u escape (non-hex digit)");
      }
      code = code * 16 + d;
      ++i_;
    }
    return code;
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
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'u': {
          unsigned code = hex4();
          if (code >= 0xDC00 && code <= 0xDFFF) fail("lone low surrogate in \\u escape");
          if (code >= 0xD800 && code <= 0xDBFF) {
            // A high surrogate must be followed by an escaped low surrogate (a character outside
            // the basic plane, as json.dumps writes it with ensure_ascii).
            if (s_.compare(i_, 2, "\\u") != 0) fail("lone high surrogate in \\u escape");
            i_ += 2;
            const unsigned low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) fail("lone high surrogate in \\u escape");
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
          }
          utf8(code, out);
          break;
        }
        default:
          --i_;
          fail(std::string("bad escape '\\") + e + "'");
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }

  static void utf8(unsigned code, std::string& out) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
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
  // Range first: casting a double outside long long's range is undefined behaviour.
  if (!(v >= -9.2e18 && v <= 9.2e18) || v != std::trunc(v)) type_error(what, "an integer");
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
