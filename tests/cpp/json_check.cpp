// SPDX-License-Identifier: MIT
// Test driver for the manifest JSON reader (csrc/sampler/json.cpp), built and run by
// tests/test_json_reader.py. The reader has no torch dependency, so this compiles in seconds with
// the system compiler and runs the reader the way a host program would.
//
//   json_check locale LOCALE   set LC_NUMERIC to LOCALE (a ',' decimal locale), then parse numbers
//   json_check cases FILE      parse each NUL-separated document in FILE; one line per document:
//                              "ok" (a string document: "ok string <UTF-8 bytes in hex>", a number:
//                              "ok number <%.17g>"), "error: <message>" (std::runtime_error) or
//                              "other: <message>" (any other exception: a bug)
#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "json.h"

namespace {

int check_locale(const char* name) {
  if (std::setlocale(LC_NUMERIC, name) == nullptr) {
    std::printf("no-locale %s\n", name);
    return 3;
  }
  // The host program's locale is in effect: strtod now stops at the '.'.
  std::printf("strtod(\"0.5\") = %g\n", std::strtod("0.5", nullptr));
  const std::string doc = R"({"a": 0.5, "b": [1e-05, -2.25e3, 0.1, 123456.789], "c": 7})";
  kldm::json::Value v;
  try {
    v = kldm::json::parse(doc);
  } catch (const std::exception& e) {
    std::printf("parse failed: %s\n", e.what());
    return 1;
  }
  const std::vector<double> b = v.at("b").as_numbers("b");
  const bool ok = v.at("a").as_number() == 0.5 && b.size() == 4 && b[0] == 1e-05 &&
                  b[1] == -2.25e3 && b[2] == 0.1 && b[3] == 123456.789 && v.at("c").as_int() == 7;
  std::printf("parse: a=%.17g b=[%.17g, %.17g, %.17g, %.17g] -> %s\n", v.at("a").as_number(), b[0],
              b[1], b[2], b[3], ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}

int check_cases(const char* path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string all = ss.str();
  size_t start = 0;
  while (start <= all.size()) {
    size_t end = all.find('\0', start);
    if (end == std::string::npos) end = all.size();
    const std::string doc = all.substr(start, end - start);
    try {
      const kldm::json::Value v = kldm::json::parse(doc);
      // Exercise the typed accessors the manifest reader uses on whatever came out.
      if (v.has("format_version")) (void)v.at("format_version").as_int("format_version");
      if (v.type == kldm::json::Value::Type::String) {
        std::printf("ok string ");
        for (unsigned char c : v.string) std::printf("%02x", c);
        std::printf("\n");
      } else if (v.type == kldm::json::Value::Type::Number) {
        std::printf("ok number %.17g\n", v.number);
      } else {
        std::printf("ok\n");
      }
    } catch (const std::runtime_error& e) {
      std::printf("error: %s\n", e.what());
    } catch (const std::exception& e) {
      std::printf("other: %s\n", e.what());
    }
    if (end == all.size()) break;
    start = end + 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "locale") return check_locale(argv[2]);
  if (argc == 3 && std::string(argv[1]) == "cases") return check_cases(argv[2]);
  std::fprintf(stderr, "usage: json_check locale LOCALE | cases FILE\n");
  return 2;
}
