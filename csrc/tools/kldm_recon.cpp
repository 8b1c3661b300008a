// SPDX-License-Identifier: MIT
// kldm-recon: reconstruct an undersampled fastMRI HDF5 file with kldm::Sampler, no Python.
//
//   kldm-recon INPUT.h5 OUTPUT.h5 --model EXPORT_DIR [--sampler cgs|cgs-ref] [--steps N] [--t0 T]
//              [--guidance G] [--eta E] [--samples N] [--refit|--no-refit] [--seed S]
//              [--batch-size B] [--device cpu|cuda] [--expect-sha256 HEX]
//              [--coil-combine auto|espirit|channels] [--maps MAPS.h5]
//
// INPUT is a fastMRI test-format file: `kspace` ([S, H, W] single-coil or [S, C, H, W] multi-coil,
// complex64 stored as the {r, i} compound h5py writes), `mask` ([W], the measured columns; k-space
// is zero elsewhere) and `ismrmrd_header` (the recon matrix size). OUTPUT is a fastMRI submission
// file: `reconstruction`, float32 [S, rx, ry], the centre crop of the RSS image, written to a
// temporary name and renamed, so a failed run leaves nothing half-written. The per-batch sampler
// seed is the one `kldm recon` uses (sampler seed, file name, first slice), so both backends give
// the same file. Errors: one line on stderr naming the file, exit status 2 (bad input) or 1.
//
// Multi-coil input with a single-coil export runs the coil-agnostic path (--coil-combine auto,
// the default, or espirit): ESPIRiT maps of each slice (or the `maps` dataset of MAPS.h5,
// [S, C, H, W] or [C, H, W] complex, as h5py writes complex64), SENSE data consistency against
// every coil, the RSS image of the coil k-space -- what `kldm recon --coil-combine espirit` does.
//
// Built with libismrmrd (KLDM_WITH_ISMRMRD; CMake finds it like HDF5, optional), INPUT may also be
// an ISMRMRD raw dataset (/dataset/data + /dataset/xml; Cartesian 2-D, the mask = the lines
// present, ACS-flagged calibration lines required) and `--format ismrmrd` writes OUTPUT as ISMRMRD
// magnitude images (/dataset/image_0) with the acquisitions' geometry, as `kldm recon --format
// ismrmrd` does. Without libismrmrd both are a one-line error naming the missing library.
#include <ATen/ATen.h>
#include <hdf5.h>

#ifdef KLDM_WITH_ISMRMRD
#include <ismrmrd/dataset.h>
#include <ismrmrd/ismrmrd.h>
#include <ismrmrd/xml.h>

#include <map>
#include <memory>
#include <set>
#endif

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include "kldm/ops.h"
#include "kldm/sampler.h"

namespace fs = std::filesystem;

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// RAII for HDF5 identifiers.
struct H5Id {
  hid_t id = -1;
  herr_t (*close)(hid_t) = nullptr;
  H5Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~H5Id() {
    if (id >= 0 && close) close(id);
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  operator hid_t() const { return id; }
};

uint32_t crc32(const std::string& s) {  // zlib.crc32 (the seed formula of kspace_ldm.recon)
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return c ^ 0xFFFFFFFFu;
}

uint64_t batch_seed(uint64_t sampler_seed, const std::string& name, int64_t start) {
  // ((sampler_seed * 1_000_003 + crc32(name)) * 8191 + start) % 2**63, exact in 2**64 arithmetic.
  uint64_t v = (sampler_seed * 1000003ull + crc32(name)) * 8191ull + static_cast<uint64_t>(start);
  return v & ((1ull << 63) - 1);
}

struct SliceGeometry {
  float position[3] = {0, 0, 0};
  float read[3] = {1, 0, 0}, phase[3] = {0, 1, 0}, slice[3] = {0, 0, 1};
  float table[3] = {0, 0, 0};
};

struct Volume {
  at::Tensor kspace;  // [S, C, H, W] complex64
  at::Tensor mask;    // [W] bool
  int64_t rx = 0, ry = 0;
  bool multicoil = false;
  std::string xml;           // the ISMRMRD header (fastMRI ismrmrd_header or ISMRMRD xml)
  float fov[3] = {0, 0, 0};  // reconSpace field of view, mm (0: unknown)
  std::vector<SliceGeometry> geometry;  // one per slice (ISMRMRD input), else empty
};

// An HDF5 file holding an ISMRMRD dataset group (data + xml), told apart by its layout.
bool is_ismrmrd(const std::string& path) {
  H5E_auto2_t old_func;
  void* old_data;
  H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  bool yes = false;
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f >= 0) {
    yes = H5Lexists(f, "dataset", H5P_DEFAULT) > 0 &&
          H5Lexists(f, "dataset/data", H5P_DEFAULT) > 0 &&
          H5Lexists(f, "dataset/xml", H5P_DEFAULT) > 0;
    H5Fclose(f);
  }
  H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
  return yes;
}

#ifdef KLDM_WITH_ISMRMRD
// Cartesian 2-D ISMRMRD raw data in the fastMRI layout of kspace_ldm.data.ismrmrd_io: line l of
// kspace_encoding_step_1 in column l + W/2 - center, readout oversampling kept (removed by the
// final crop to the reconSpace matrix), the mask = the lines present (the same in every slice).
Volume read_ismrmrd(const std::string& path) {
  std::unique_ptr<ISMRMRD::Dataset> d;
  std::string xml;
  try {
    d = std::make_unique<ISMRMRD::Dataset>(path.c_str(), "dataset", false);
    d->readHeader(xml);
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw InputError(path + ": cannot read the ISMRMRD dataset (" + w.substr(0, w.find('\n')) +
                     ")");
  }
  ISMRMRD::IsmrmrdHeader hdr;
  try {
    ISMRMRD::deserialize(xml.c_str(), hdr);
  } catch (const std::exception& e) {
    std::string w = e.what();
    throw InputError(path + ": invalid ISMRMRD XML header (" + w.substr(0, w.find('\n')) + ")");
  }
  if (hdr.encoding.empty())
    throw InputError(path + ": the ISMRMRD header has no <encoding> section");
  if (hdr.encoding.size() > 1)
    throw InputError(path + ": " + std::to_string(hdr.encoding.size()) +
                     " encoding spaces in the header; only one is supported");
  const auto& enc = hdr.encoding[0];
  if (enc.trajectory != ISMRMRD::TrajectoryType::CARTESIAN)
    throw InputError(path + ": non-Cartesian trajectory is not supported (Cartesian only)");
  if (enc.encodedSpace.matrixSize.z > 1)
    throw InputError(
        path + ": 3-D encoding (encodedSpace z = " + std::to_string(enc.encodedSpace.matrixSize.z) +
        ") is not supported (2-D Cartesian only)");
  const int64_t ex = enc.encodedSpace.matrixSize.x, ey = enc.encodedSpace.matrixSize.y;
  int64_t center = ey / 2, maximum = ey - 1;
  if (enc.encodingLimits.kspace_encoding_step_1) {
    center = enc.encodingLimits.kspace_encoding_step_1->center;
    maximum = enc.encodingLimits.kspace_encoding_step_1->maximum;
  }
  const int64_t left = ey / 2 - center, right = left + maximum + 1;
  if (left < 0 || right > ey)
    throw InputError(path + ": kspace_encoding_step_1 limits do not fit the encoded matrix");

  const ISMRMRD::ISMRMRD_AcquisitionFlags skip[] = {
      ISMRMRD::ISMRMRD_ACQ_IS_NOISE_MEASUREMENT,
      ISMRMRD::ISMRMRD_ACQ_IS_NAVIGATION_DATA,
      ISMRMRD::ISMRMRD_ACQ_IS_PHASECORR_DATA,
      ISMRMRD::ISMRMRD_ACQ_IS_HPFEEDBACK_DATA,
      ISMRMRD::ISMRMRD_ACQ_IS_DUMMYSCAN_DATA,
      ISMRMRD::ISMRMRD_ACQ_IS_RTFEEDBACK_DATA,
      ISMRMRD::ISMRMRD_ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA};
  std::map<std::pair<int64_t, int64_t>, std::vector<std::complex<float>>> lines;
  std::map<int64_t, SliceGeometry> geometry;
  std::set<int64_t> acs;
  int64_t coils = -1;
  const uint32_t n = d->getNumberOfAcquisitions();
  ISMRMRD::Acquisition acq;
  for (uint32_t i = 0; i < n; ++i) {
    try {
      d->readAcquisition(i, acq);
    } catch (const std::exception&) {
      throw InputError(path + ": cannot read acquisition " + std::to_string(i));
    }
    bool skipped = false;
    for (auto f : skip) skipped = skipped || acq.isFlagSet(f);
    const auto& idx = acq.idx();
    if (skipped || idx.repetition != 0) continue;
    if (idx.contrast || idx.phase || idx.set || idx.average)
      throw InputError(path + ": acquisition " + std::to_string(i) +
                       " has several contrasts/phases/sets/averages; not supported");
    if (idx.kspace_encode_step_2)
      throw InputError(path + ": 3-D encoding (kspace_encode_step_2) is not supported");
    if (acq.isFlagSet(ISMRMRD::ISMRMRD_ACQ_IS_REVERSE))
      throw InputError(path + ": reversed (EPI) readouts are not supported");
    const int64_t pre = acq.discard_pre(), post = acq.discard_post();
    const int64_t ns = acq.number_of_samples() - pre - post;
    if (ns != ex)
      throw InputError(path + ": acquisition " + std::to_string(i) + " has " + std::to_string(ns) +
                       " readout samples, the encodedSpace x is " + std::to_string(ex));
    const int64_t c = acq.active_channels();
    if (coils < 0) coils = c;
    if (c != coils) throw InputError(path + ": inconsistent coil counts");
    const int64_t col = idx.kspace_encode_step_1 + left, sl = idx.slice;
    if (col < left || col >= right)
      throw InputError(path + ": line outside the kspace_encoding_step_1 limits");
    auto key = std::make_pair(sl, col);
    if (lines.count(key))
      throw InputError(path + ": line " + std::to_string(idx.kspace_encode_step_1) + " of slice " +
                       std::to_string(sl) + " is acquired twice; not supported");
    std::vector<std::complex<float>> data(static_cast<size_t>(c * ex));
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t x = 0; x < ex; ++x)
        data[ch * ex + x] = acq.data(static_cast<uint16_t>(x + pre), static_cast<uint16_t>(ch));
    lines[key] = std::move(data);
    if (acq.isFlagSet(ISMRMRD::ISMRMRD_ACQ_IS_PARALLEL_CALIBRATION) ||
        acq.isFlagSet(ISMRMRD::ISMRMRD_ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING))
      acs.insert(col);
    if (!geometry.count(sl)) {
      SliceGeometry g;
      bool dirs = false;
      for (int k = 0; k < 3; ++k) dirs = dirs || acq.read_dir()[k] != 0;
      for (int k = 0; k < 3; ++k) {
        g.position[k] = acq.position()[k];
        g.table[k] = acq.patient_table_position()[k];
        if (dirs) {
          g.read[k] = acq.read_dir()[k];
          g.phase[k] = acq.phase_dir()[k];
          g.slice[k] = acq.slice_dir()[k];
        }
      }
      geometry[sl] = g;
    }
  }
  if (lines.empty()) throw InputError(path + ": no imaging acquisitions");
  const int64_t S = geometry.rbegin()->first + 1;
  if (static_cast<int64_t>(geometry.size()) != S)
    throw InputError(path + ": slice indices are not 0.." + std::to_string(S - 1));
  std::vector<std::set<int64_t>> per_slice(S);
  for (const auto& kv : lines) per_slice[kv.first.first].insert(kv.first.second);
  for (int64_t s = 1; s < S; ++s)
    if (per_slice[s] != per_slice[0])
      throw InputError(path + ": inconsistent line counts: slice " + std::to_string(s) + " has " +
                       std::to_string(per_slice[s].size()) + " lines, slice 0 has " +
                       std::to_string(per_slice[0].size()) + "; one mask per volume is required");
  if (acs.empty() && static_cast<int64_t>(per_slice[0].size()) < right - left)
    throw InputError(path +
                     ": no calibration lines (no ACQ_IS_PARALLEL_CALIBRATION flags) in an "
                     "undersampled file; the diffusion samplers need a calibration region");

  Volume v;
  v.kspace = at::zeros({S, coils, ex, ey}, at::kComplexFloat);
  auto* k = reinterpret_cast<std::complex<float>*>(v.kspace.data_ptr());
  for (const auto& [key, data] : lines)
    for (int64_t ch = 0; ch < coils; ++ch)
      for (int64_t x = 0; x < ex; ++x)
        k[((key.first * coils + ch) * ex + x) * ey + key.second] = data[ch * ex + x];
  v.mask = at::zeros({ey}, at::kBool);
  for (int64_t col : per_slice[0]) v.mask[col].fill_(true);
  v.multicoil = coils > 1;
  v.rx = std::min<int64_t>(enc.reconSpace.matrixSize.x, ex);
  v.ry = std::min<int64_t>(enc.reconSpace.matrixSize.y, ey);
  v.xml = xml;
  v.fov[0] = enc.reconSpace.fieldOfView_mm.x;
  v.fov[1] = enc.reconSpace.fieldOfView_mm.y;
  v.fov[2] = enc.reconSpace.fieldOfView_mm.z;
  for (int64_t s = 0; s < S; ++s) v.geometry.push_back(geometry[s]);
  return v;
}

// ISMRMRD magnitude images (series image_0), x = the readout (rows of recon [S, rx, ry]), with
// each slice's position and directions; written to a temporary name and renamed.
void write_ismrmrd_images(const std::string& path, const at::Tensor& recon, const Volume& v) {
  fs::path out(path);
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
  fs::path tmp = out;
  tmp += ".tmp-kldm-recon";
  fs::remove(tmp);
  const int64_t S = recon.size(0), rx = recon.size(1), ry = recon.size(2);
  auto r = recon.contiguous();
  const float* p = r.data_ptr<float>();
  const float thick = v.fov[2] > 0 ? v.fov[2] : 1.0f;
  const float dx = v.fov[0] > 0 ? v.fov[0] / rx : 1.0f, dy = v.fov[1] > 0 ? v.fov[1] / ry : 1.0f;
  {
    ISMRMRD::Dataset d(tmp.c_str(), "dataset", true);
    if (!v.xml.empty()) d.writeHeader(v.xml);
    for (int64_t s = 0; s < S; ++s) {
      ISMRMRD::Image<float> img(static_cast<uint16_t>(rx), static_cast<uint16_t>(ry), 1, 1);
      for (int64_t x = 0; x < rx; ++x)
        for (int64_t y = 0; y < ry; ++y)
          img(static_cast<uint16_t>(x), static_cast<uint16_t>(y)) = p[(s * rx + x) * ry + y];
      SliceGeometry g;
      if (static_cast<int64_t>(v.geometry.size()) == S)
        g = v.geometry[s];
      else
        g.position[2] = (s - (S - 1) / 2.0f) * thick;
      img.setFieldOfView(dx * rx, dy * ry, thick);
      img.setPosition(g.position[0], g.position[1], g.position[2]);
      img.setReadDirection(g.read[0], g.read[1], g.read[2]);
      img.setPhaseDirection(g.phase[0], g.phase[1], g.phase[2]);
      img.setSliceDirection(g.slice[0], g.slice[1], g.slice[2]);
      img.setPatientTablePosition(g.table[0], g.table[1], g.table[2]);
      img.setImageType(ISMRMRD::ISMRMRD_IMTYPE_MAGNITUDE);
      img.setSlice(static_cast<uint16_t>(s));
      img.setImageIndex(static_cast<uint16_t>(s + 1));
      img.setImageSeriesIndex(1);
      d.appendImage("image_0", img);
    }
  }
  fs::rename(tmp, out);
}
#endif

std::string read_header(hid_t file, const std::string& path) {
  if (H5Lexists(file, "ismrmrd_header", H5P_DEFAULT) <= 0) return "";
  H5Id ds(H5Dopen2(file, "ismrmrd_header", H5P_DEFAULT), H5Dclose);
  H5Id ft(H5Dget_type(ds), H5Tclose);
  if (H5Tis_variable_str(ft) > 0) {
    H5Id mt(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mt, H5T_VARIABLE);
    H5Tset_cset(mt, H5Tget_cset(ft));  // h5py writes UTF-8; HDF5 converts no character sets
    char* buf = nullptr;
    if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, &buf) < 0)
      throw InputError(path + ": cannot read ismrmrd_header");
    std::string out(buf ? buf : "");
    H5free_memory(buf);
    return out;
  }
  size_t n = H5Tget_size(ft);
  std::string out(n, '\0');
  if (H5Dread(ds, ft, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()) < 0)
    throw InputError(path + ": cannot read ismrmrd_header");
  return out;
}

// reconSpace matrixSize (x, y) from the ISMRMRD XML; (0, 0) if absent.
std::pair<int64_t, int64_t> recon_matrix(const std::string& xml) {
  std::smatch m;
  std::regex re(R"(<reconSpace>\s*<matrixSize>\s*<x>(\d+)</x>\s*<y>(\d+)</y>)");
  if (std::regex_search(xml, m, re)) return {std::stoll(m[1]), std::stoll(m[2])};
  return {0, 0};
}

Volume read_volume(const std::string& path) {
  H5E_auto2_t old_func;
  void* old_data;
  H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // our messages, not HDF5's stack dumps
  if (!fs::is_regular_file(path)) throw InputError(path + ": no such file");
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file.id < 0) throw InputError(path + ": not an HDF5 file");
  for (const char* key : {"kspace", "mask"})
    if (H5Lexists(file, key, H5P_DEFAULT) <= 0)
      throw InputError(path + ": missing HDF5 key '" + key +
                       "' (kldm-recon needs an undersampled fastMRI test-format file)");
  Volume v;
  {
    H5Id ds(H5Dopen2(file, "kspace", H5P_DEFAULT), H5Dclose);
    H5Id space(H5Dget_space(ds), H5Sclose);
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd != 3 && nd != 4)
      throw InputError(path + ": kspace must be [slices, H, W] or [slices, coils, H, W], has " +
                       std::to_string(nd) + " dims");
    std::vector<hsize_t> dims(nd);
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    H5Id ft(H5Dget_type(ds), H5Tclose);
    if (H5Tget_class(ft) != H5T_COMPOUND || H5Tget_nmembers(ft) != 2)
      throw InputError(path + ": kspace must be complex (an {r, i} compound), got another dtype");
    H5Id mt(H5Tcreate(H5T_COMPOUND, 2 * sizeof(float)), H5Tclose);
    H5Tinsert(mt, "r", 0, H5T_NATIVE_FLOAT);
    H5Tinsert(mt, "i", sizeof(float), H5T_NATIVE_FLOAT);
    std::vector<int64_t> shape(dims.begin(), dims.end());
    if (nd == 3) shape.insert(shape.begin() + 1, 1);
    v.multicoil = nd == 4;
    auto k = at::empty(shape, at::kComplexFloat);
    if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, k.data_ptr()) < 0)
      throw InputError(path + ": cannot read kspace (compound fields must be named r and i)");
    v.kspace = k;
  }
  {
    H5Id ds(H5Dopen2(file, "mask", H5P_DEFAULT), H5Dclose);
    H5Id space(H5Dget_space(ds), H5Sclose);
    hssize_t n = H5Sget_simple_extent_npoints(space);
    if (H5Sget_simple_extent_ndims(space) != 1 || n != v.kspace.size(-1))
      throw InputError(path + ": mask must be [W] with W = " + std::to_string(v.kspace.size(-1)));
    H5Id ft(H5Dget_type(ds), H5Tclose);
    std::vector<double> buf(static_cast<size_t>(n));
    herr_t rc;
    if (H5Tget_class(ft) == H5T_ENUM) {  // numpy bool, as h5py stores it
      std::vector<signed char> b(static_cast<size_t>(n));
      H5Id base(H5Tget_super(ft), H5Tclose);
      H5Id native(H5Tget_native_type(base, H5T_DIR_ASCEND), H5Tclose);
      rc = H5Dread(ds, native, H5S_ALL, H5S_ALL, H5P_DEFAULT, b.data());
      for (size_t i = 0; i < b.size(); ++i) buf[i] = b[i];
    } else {
      rc = H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data());
    }
    if (rc < 0) throw InputError(path + ": cannot read mask");
    v.mask = at::tensor(buf, at::kDouble).ne(0);
    if (!v.mask.any().item<bool>()) throw InputError(path + ": mask samples no column");
  }
  v.xml = read_header(file, path);
  auto [rx, ry] = recon_matrix(v.xml);
  const int64_t H = v.kspace.size(-2), W = v.kspace.size(-1);
  v.rx = rx > 0 ? std::min(rx, H) : std::min<int64_t>(320, H);
  v.ry = ry > 0 ? std::min(ry, W) : std::min<int64_t>(320, W);
  H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
  return v;
}

// The `maps` dataset of MAPS.h5: [S, C, H, W] or [C, H, W] (one set for every slice) complex.
at::Tensor read_maps(const std::string& path) {
  H5E_auto2_t old_func;
  void* old_data;
  H5Eget_auto2(H5E_DEFAULT, &old_func, &old_data);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!fs::is_regular_file(path)) throw InputError(path + ": no such file");
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file.id < 0) throw InputError(path + ": not an HDF5 file");
  if (H5Lexists(file, "maps", H5P_DEFAULT) <= 0)
    throw InputError(path + ": missing HDF5 key 'maps' (coil maps [S, C, H, W] complex)");
  H5Id ds(H5Dopen2(file, "maps", H5P_DEFAULT), H5Dclose);
  H5Id space(H5Dget_space(ds), H5Sclose);
  int nd = H5Sget_simple_extent_ndims(space);
  if (nd != 3 && nd != 4)
    throw InputError(path + ": maps must be [slices, coils, H, W] or [coils, H, W], has " +
                     std::to_string(nd) + " dims");
  std::vector<hsize_t> dims(nd);
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  H5Id ft(H5Dget_type(ds), H5Tclose);
  if (H5Tget_class(ft) != H5T_COMPOUND || H5Tget_nmembers(ft) != 2)
    throw InputError(path + ": maps must be complex (an {r, i} compound), got another dtype");
  H5Id mt(H5Tcreate(H5T_COMPOUND, 2 * sizeof(float)), H5Tclose);
  H5Tinsert(mt, "r", 0, H5T_NATIVE_FLOAT);
  H5Tinsert(mt, "i", sizeof(float), H5T_NATIVE_FLOAT);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  if (nd == 3) shape.insert(shape.begin(), 1);
  auto maps = at::empty(shape, at::kComplexFloat);
  if (H5Dread(ds, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, maps.data_ptr()) < 0)
    throw InputError(path + ": cannot read maps (compound fields must be named r and i)");
  H5Eset_auto2(H5E_DEFAULT, old_func, old_data);
  return maps;
}

void write_reconstruction(const std::string& path, const at::Tensor& recon,
                          const std::vector<std::pair<std::string, std::string>>& attrs) {
  fs::path out(path);
  if (!out.parent_path().empty()) fs::create_directories(out.parent_path());
  fs::path tmp = out;
  tmp += ".tmp-kldm-recon";
  {
    H5Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file.id < 0) throw std::runtime_error(path + ": cannot create the output file");
    hsize_t dims[3] = {static_cast<hsize_t>(recon.size(0)), static_cast<hsize_t>(recon.size(1)),
                       static_cast<hsize_t>(recon.size(2))};
    H5Id space(H5Screate_simple(3, dims, nullptr), H5Sclose);
    H5Id ds(H5Dcreate2(file, "reconstruction", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                       H5P_DEFAULT),
            H5Dclose);
    auto c = recon.contiguous();
    if (H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, c.data_ptr()) < 0)
      throw std::runtime_error(path + ": cannot write reconstruction");
    for (const auto& [k, val] : attrs) {
      // variable-length UTF-8, as h5py writes str attributes (read back as str, not bytes)
      H5Id st(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(st, H5T_VARIABLE);
      H5Tset_cset(st, H5T_CSET_UTF8);
      H5Id as(H5Screate(H5S_SCALAR), H5Sclose);
      H5Id a(H5Acreate2(file, k.c_str(), st, as, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
      const char* ptr = val.c_str();
      H5Awrite(a, st, &ptr);
    }
  }
  fs::rename(tmp, out);
}

int run(int argc, char** argv) {
  std::vector<std::string> pos;
  std::string model, device = "cpu", format = "h5", expect_sha256, maps_path;
  kldm::SamplerOptions opt;
  uint64_t seed = 0;
  int64_t batch = 8;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "-h" || a == "--help") {
        std::cout << "usage: kldm-recon INPUT.h5 OUTPUT.h5 --model EXPORT_DIR [--sampler "
                     "cgs|cgs-ref] [--start cs-wavelet|zero-filled] [--steps N] [--t0 T] "
                     "[--guidance G] [--eta E] [--samples N] "
                     "[--refit|--no-refit] [--seed S] [--batch-size B] [--device cpu|cuda] "
                     "[--format h5|ismrmrd] [--expect-sha256 HEX] "
                     "[--coil-combine auto|espirit|channels] [--maps MAPS.h5]\n"
                     "INPUT: a fastMRI test-format file or an ISMRMRD raw dataset ("
#ifdef KLDM_WITH_ISMRMRD
                     "ISMRMRD support built"
#else
                     "ISMRMRD support NOT built: no libismrmrd at build time"
#endif
                     ")\n"
                     "  --expect-sha256: sha256 of EXPORT_DIR/manifest.json, checked before "
                     "anything of the model is loaded\n"
                     "  --start: what cgs encodes first (default: the export's, cs-wavelet)\n"
                     "  --coil-combine: multi-coil input with a single-coil export: espirit "
                     "(ESPIRiT maps, SENSE consistency; auto, the default, picks it), channels "
                     "(coils as channels of a multi-coil export)\n"
                     "  --maps: coil maps for the espirit path (dataset 'maps', [S, C, H, W] or "
                     "[C, H, W] complex) instead of ESPIRiT\n";
        return 0;
      } else if (a == "--format")
        format = value();
      else if (a == "--model")
        model = value();
      else if (a == "--sampler")
        opt.sampler = value();
      else if (a == "--start")
        opt.start = value();
      else if (a == "--steps")
        opt.steps = std::stoll(value());
      else if (a == "--t0")
        opt.t0 = std::stoll(value());
      else if (a == "--guidance")
        opt.guidance = std::stod(value());
      else if (a == "--eta")
        opt.eta = std::stod(value());
      else if (a == "--samples")
        opt.samples = std::stoll(value());
      else if (a == "--refit" || a == "--no-refit")
        opt.refit = a == "--refit";
      else if (a == "--seed")
        seed = std::stoull(value());
      else if (a == "--batch-size")
        batch = std::stoll(value());
      else if (a == "--device")
        device = value();
      else if (a == "--expect-sha256")
        expect_sha256 = value();
      else if (a == "--coil-combine")
        opt.coil_combine = value();
      else if (a == "--maps")
        maps_path = value();
      else if (!a.empty() && a[0] == '-')
        throw UsageError("unknown option " + a);
      else
        pos.push_back(a);
    } catch (const std::invalid_argument&) {
      throw UsageError(a + ": not a number");
    }
  }
  if (pos.size() != 2 || model.empty())
    throw UsageError("need INPUT.h5 OUTPUT.h5 --model EXPORT_DIR (see --help)");
  if (batch < 1) throw UsageError("--batch-size must be >= 1");
  if (format != "h5" && format != "ismrmrd")
    throw UsageError("--format must be h5 or ismrmrd, got " + format);
  if (!opt.start.empty() && opt.start != "cs-wavelet" && opt.start != "zero-filled")
    throw UsageError("--start must be cs-wavelet or zero-filled, got " + opt.start);
  if (opt.coil_combine != "auto" && opt.coil_combine != "espirit" && opt.coil_combine != "channels")
    throw UsageError("--coil-combine must be auto, espirit or channels, got " + opt.coil_combine);
  if (!maps_path.empty() && opt.coil_combine == "channels")
    throw UsageError("--maps is for the coil-agnostic path, not --coil-combine channels");
#ifndef KLDM_WITH_ISMRMRD
  if (format == "ismrmrd")
    throw UsageError(
        "--format ismrmrd: kldm-recon was built without libismrmrd (install "
        "libismrmrd-dev and rebuild)");
  if (is_ismrmrd(pos[0]))
    throw InputError(pos[0] +
                     ": an ISMRMRD dataset, but kldm-recon was built without libismrmrd (install "
                     "libismrmrd-dev and rebuild)");
#endif
  c10::Device dev(device == "cuda" ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU));
  // The input first: a bad file is reported before a model is loaded.
#ifdef KLDM_WITH_ISMRMRD
  Volume v = is_ismrmrd(pos[0]) ? read_ismrmrd(pos[0]) : read_volume(pos[0]);
#else
  Volume v = read_volume(pos[0]);
#endif
  at::Tensor maps;
  if (!maps_path.empty()) {
    maps = read_maps(maps_path);
    if (maps.size(0) != 1 && maps.size(0) != v.kspace.size(0))
      throw InputError(maps_path + ": maps for " + std::to_string(maps.size(0)) +
                       " slices, the k-space has " + std::to_string(v.kspace.size(0)));
  }
  kldm::Sampler sampler(model, dev, expect_sha256);
  const int64_t S = v.kspace.size(0), H = v.kspace.size(-2), W = v.kspace.size(-1);
  const std::string name = fs::path(pos[0]).filename().string();
  auto recon = at::empty({S, v.rx, v.ry}, at::kFloat);
  const int64_t top = (H - v.rx) / 2, left = (W - v.ry) / 2;
  for (int64_t s = 0; s < S; s += batch) {
    int64_t n = std::min(batch, S - s);
    auto k = v.kspace.narrow(0, s, n).to(dev);
    if (!at::isfinite(k).all().item<bool>())
      throw InputError(pos[0] + ": kspace contains NaN or Inf (slices " + std::to_string(s) + ".." +
                       std::to_string(s + n - 1) + ")");
    opt.seed = batch_seed(seed, name, s);
    if (maps.defined()) opt.maps = (maps.size(0) == 1 ? maps : maps.narrow(0, s, n)).to(dev);
    kldm::Reconstruction r;
    try {
      r = sampler.reconstruct(k, v.mask, opt);
    } catch (const kldm::Error& e) {
      // name the file the problem is in: the maps file for the maps' checks, else the input
      const std::string w = e.what();
      if (!maps_path.empty() && w.rfind("maps: ", 0) == 0)
        throw InputError(maps_path + ": " + w.substr(6));
      throw InputError(pos[0] + ": " + w);
    }
    recon.narrow(0, s, n).copy_(r.image.narrow(-2, top, v.rx).narrow(-1, left, v.ry).cpu());
  }
#ifdef KLDM_WITH_ISMRMRD
  if (format == "ismrmrd") {
    write_ismrmrd_images(pos[1], recon, v);
    std::cerr << "kldm-recon: " << pos[1] << " (" << S << " ISMRMRD images, " << opt.sampler
              << ")\n";
    return 0;
  }
#endif
  write_reconstruction(pos[1], recon,
                       {{"sampler", opt.sampler},
                        {"backend", "cpp"},
                        {"model", model},
                        {"sampler_seed", std::to_string(seed)},
                        {"start", opt.start.empty() ? "default" : opt.start},
                        {"coil_combine", opt.coil_combine}});
  std::cerr << "kldm-recon: " << pos[1] << " (" << S << " slices, " << opt.sampler << ")\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "kldm-recon: error: " << e.what() << "\n";
    return 2;
  } catch (const InputError& e) {
    std::cerr << "kldm-recon: error: " << e.what() << "\n";
    return 2;
  } catch (const kldm::Error& e) {
    std::cerr << "kldm-recon: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::string w = e.what();
    std::cerr << "kldm-recon: error: " << w.substr(0, w.find('\n')) << "\n";
    return 1;
  }
}
