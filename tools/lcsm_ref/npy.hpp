// Reading and writing NumPy .npy files (format versions 1.0 to 3.0, little-endian, C order): the
// element types lcsm-ref exchanges with ports. Hand-written rather than a library: docs/decisions.md
// says why. Every malformed file is a ToolError naming the file and what was wrong with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "error.hpp"
#include "lcsm/core/tensor.hpp"

namespace lcsm::ref {

// How an array's elements are stored. bf16 has no NumPy type: it travels as uint16 bit patterns.
enum class Storage { f64, f32, f16, bf16, i64 };

const char* npy_descr(Storage s);     // "<f8", "<f4", "<f2", "<u2", "<i8"
const char* storage_name(Storage s);  // "float64", ..., "bfloat16 (uint16 bits)", "int64"

struct NpyArray {
  Storage storage = Storage::f64;
  std::vector<index_t> shape;
  std::vector<double> values;  // row-major; 16-bit and integer elements converted exactly
};

// Reads `path`. Floating-point files may be float64, float32, float16 or uint16 (bfloat16 bits);
// int64 files are read for completeness. Throws ToolError for anything else.
NpyArray read_npy(const std::string& path);

// Writes values (row-major, already representable in `storage`) as a version 1.0 .npy file.
void write_npy(const std::string& path, Storage storage, const std::vector<index_t>& shape,
               const std::vector<double>& values);

std::string shape_string(const std::vector<index_t>& shape);  // "[2, 64, 4, 32]"

}  // namespace lcsm::ref
