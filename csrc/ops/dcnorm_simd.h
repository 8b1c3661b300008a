// SPDX-License-Identifier: MIT
// A pair of doubles, the (re, im) of one complex sample, for the CPU reductions of dc_residual and
// kspace_normalize. With GCC/Clang it is a 16-byte vector (one SSE2/NEON register: the float ->
// double conversion, subtraction, square and add of both parts are single instructions, which the
// auto-vectoriser does not reliably find for reductions); elsewhere a plain struct with the same
// per-lane arithmetic. Lanes never mix, so both forms give bit-identical sums.
#pragma once

namespace kldm::cpu {

#if defined(__GNUC__)
typedef double Pair __attribute__((vector_size(16)));
#else
struct Pair {
  double v[2];
  double operator[](int i) const { return v[i]; }
  friend Pair operator+(Pair a, Pair b) { return {a.v[0] + b.v[0], a.v[1] + b.v[1]}; }
  friend Pair operator-(Pair a, Pair b) { return {a.v[0] - b.v[0], a.v[1] - b.v[1]}; }
  friend Pair operator*(Pair a, Pair b) { return {a.v[0] * b.v[0], a.v[1] * b.v[1]}; }
  Pair& operator+=(Pair b) { return *this = *this + b; }
};
#endif

// (double(z[0]), double(z[1])): one complex sample's parts in double.
template <typename T>
inline Pair load_pair(const T* z) {
  const Pair p = {static_cast<double>(z[0]), static_cast<double>(z[1])};
  return p;
}

inline Pair zero_pair() {
  const Pair p = {0.0, 0.0};
  return p;
}

}  // namespace kldm::cpu
