// SPDX-License-Identifier: MIT
// SHA-256 (FIPS 180-4) of a file, to verify export packages against their manifest before they are
// loaded. Hand-written because libtorch exposes only SHA-1 (c10/util/hash.h) and OpenSSL would be a
// new system dependency of every build; tests compare it with Python's hashlib.
#pragma once

#include <string>

namespace kldm {

// Lower-case hex digest of the file's bytes; throws std::runtime_error if it cannot be read.
std::string sha256_file(const std::string& path);
// Digest of a byte string (tests).
std::string sha256_bytes(const std::string& bytes);

}  // namespace kldm
