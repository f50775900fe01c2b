// .npy: a magic string, a version, a little-endian header length, a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded to 64 bytes, then the data.
#include "npy.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "support/host_tensor.hpp"

namespace lcsm::ref {

namespace {

constexpr char kMagic[] = "\x93NUMPY";

std::size_t item_size(Storage s) { return s == Storage::f64 || s == Storage::i64 ? 8 : s == Storage::f32 ? 4 : 2; }

// The value of 'key' in the header dict, up to the character that ends it.
std::string header_field(const std::string& path, const std::string& header, const char* key) {
  const std::string quoted = std::string("'") + key + "'";
  const auto at = header.find(quoted);
  if (at == std::string::npos) fail(path, ": not a valid .npy file: the header has no ", quoted, " entry");
  auto i = header.find(':', at + quoted.size());
  if (i == std::string::npos) fail(path, ": not a valid .npy file: malformed header");
  ++i;
  while (i < header.size() && header[i] == ' ') ++i;
  if (i >= header.size()) fail(path, ": not a valid .npy file: malformed header");
  if (header[i] == '\'') {
    const auto end = header.find('\'', i + 1);
    if (end == std::string::npos) fail(path, ": not a valid .npy file: malformed header");
    return header.substr(i + 1, end - i - 1);
  }
  if (header[i] == '(') {
    const auto end = header.find(')', i);
    if (end == std::string::npos) fail(path, ": not a valid .npy file: malformed header");
    return header.substr(i + 1, end - i - 1);
  }
  const auto end = header.find_first_of(",}", i);
  return header.substr(i, end == std::string::npos ? std::string::npos : end - i);
}

std::vector<index_t> parse_shape(const std::string& path, const std::string& text) {
  std::vector<index_t> shape;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto first = item.find_first_not_of(' ');
    if (first == std::string::npos) continue;  // the trailing comma of (n,)
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str() + first, &end, 10);
    if (end == item.c_str() + first || v < 0) fail(path, ": not a valid .npy file: bad shape (", text, ")");
    shape.push_back(v);
  }
  return shape;
}

Storage parse_descr(const std::string& path, const std::string& descr) {
  for (Storage s : {Storage::f64, Storage::f32, Storage::f16, Storage::bf16, Storage::i64})
    if (descr == npy_descr(s)) return s;
  if (!descr.empty() && descr[0] == '>')
    fail(path, ": big-endian data ('", descr, "') is not supported; save little-endian arrays (astype('<f4'))");
  fail(path, ": unsupported element type '", descr,
       "'; expected float64 '<f8', float32 '<f4', float16 '<f2' or bfloat16 bits as uint16 '<u2'");
}

double element(Storage s, const unsigned char* p) {
  switch (s) {
    case Storage::f64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case Storage::f32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case Storage::f16:
    case Storage::bf16: {
      std::uint16_t v;
      std::memcpy(&v, p, 2);
      return s == Storage::f16 ? test::from_f16_bits(v) : test::from_bf16_bits(v);
    }
    case Storage::i64: {
      std::int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
  }
  return 0;
}

void put_element(Storage s, double x, unsigned char* p) {
  switch (s) {
    case Storage::f64: std::memcpy(p, &x, 8); break;
    case Storage::f32: {
      const float v = static_cast<float>(x);
      std::memcpy(p, &v, 4);
      break;
    }
    case Storage::f16:
    case Storage::bf16: {
      const std::uint16_t v =
          s == Storage::f16 ? test::to_f16_bits(static_cast<float>(x)) : test::to_bf16_bits(static_cast<float>(x));
      std::memcpy(p, &v, 2);
      break;
    }
    case Storage::i64: {
      const auto v = static_cast<std::int64_t>(x);
      std::memcpy(p, &v, 8);
      break;
    }
  }
}

}  // namespace

const char* npy_descr(Storage s) {
  switch (s) {
    case Storage::f64: return "<f8";
    case Storage::f32: return "<f4";
    case Storage::f16: return "<f2";
    case Storage::bf16: return "<u2";
    case Storage::i64: return "<i8";
  }
  return "?";
}

const char* storage_name(Storage s) {
  switch (s) {
    case Storage::f64: return "float64";
    case Storage::f32: return "float32";
    case Storage::f16: return "float16";
    case Storage::bf16: return "bfloat16 (uint16 bits)";
    case Storage::i64: return "int64";
  }
  return "?";
}

std::string shape_string(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

NpyArray read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open: ", std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < 10 || bytes.compare(0, 6, kMagic, 6) != 0)
    fail(path, ": not a .npy file (no \\x93NUMPY magic string)");
  const int major = static_cast<unsigned char>(bytes[6]);
  std::size_t header_len = 0, offset = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | static_cast<std::size_t>(static_cast<unsigned char>(bytes[9]))
                                                            << 8;
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) fail(path, ": not a valid .npy file: truncated header");
    for (int i = 0; i < 4; ++i)
      header_len |= static_cast<std::size_t>(static_cast<unsigned char>(bytes[8 + i])) << (8 * i);
    offset = 12;
  } else {
    fail(path, ": unsupported .npy format version ", major, " (1 to 3 are read)");
  }
  if (bytes.size() < offset + header_len) fail(path, ": not a valid .npy file: truncated header");
  const std::string header = bytes.substr(offset, header_len);
  NpyArray a;
  a.storage = parse_descr(path, header_field(path, header, "descr"));
  if (header_field(path, header, "fortran_order").find("True") != std::string::npos)
    fail(path, ": Fortran-ordered arrays are not supported; save a C-ordered array (np.ascontiguousarray)");
  a.shape = parse_shape(path, header_field(path, header, "shape"));
  std::size_t n = 1;
  for (index_t e : a.shape) n *= static_cast<std::size_t>(e);
  const std::size_t size = item_size(a.storage), have = bytes.size() - offset - header_len;
  if (have != n * size)
    fail(path, ": ", have < n * size ? "truncated" : "trailing bytes", ": shape ", shape_string(a.shape), " of ",
         npy_descr(a.storage), " needs ", n * size, " bytes of data, the file has ", have);
  a.values.resize(n);
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data()) + offset + header_len;
  for (std::size_t i = 0; i < n; ++i) a.values[i] = element(a.storage, data + i * size);
  return a;
}

void write_npy(const std::string& path, Storage storage, const std::vector<index_t>& shape,
               const std::vector<double>& values) {
  std::string dims;
  for (index_t e : shape) dims += std::to_string(e) + ", ";
  if (shape.size() > 1) dims.erase(dims.size() - 2);  // (n,) keeps its comma
  std::string header =
      std::string("{'descr': '") + npy_descr(storage) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out(kMagic, 6);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  const std::size_t size = item_size(storage), start = out.size();
  out.resize(start + values.size() * size);
  for (std::size_t i = 0; i < values.size(); ++i)
    put_element(storage, values[i], reinterpret_cast<unsigned char*>(&out[start + i * size]));
  std::ofstream f(path, std::ios::binary);
  if (!f || !f.write(out.data(), static_cast<std::streamsize>(out.size())))
    fail(path, ": cannot write: ", std::strerror(errno));
}

}  // namespace lcsm::ref
