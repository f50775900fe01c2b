// A Toeplitz test problem: a case, random inputs rounded to the dtype under test, and the float64
// references (direct sums, and the EOS mapping) of the same rounded inputs.
#pragma once

#include <cmath>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "lcsm/reference/toeplitz.hpp"
#include "support/backend.hpp"
#include "support/compare.hpp"
#include "support/toeplitz_backend.hpp"

namespace lcsm::test {

inline const char* name(ToeplitzSpec::Path p) {
  switch (p) {
    case ToeplitzSpec::Path::automatic: return "automatic";
    case ToeplitzSpec::Path::fft: return "fft";
    case ToeplitzSpec::Path::direct: return "direct";
  }
  return "?";
}

struct ToeplitzCase {
  index_t B = 1, n = 64, C = 3;
  bool causal = true;
  ToeplitzSpec::Path path = ToeplitzSpec::Path::automatic;
  bool strided = false;         // x, y in [B, C, n] memory
  std::vector<index_t> varlen;  // packed sequence lengths (B = 1, n = their sum)
  index_t cover = 0;            // varlen: the n the coefficients cover (0: the longest sequence)
  bool decaying = false;        // coefficients N(0, 1) * 0.5^|r| (underflow to 0 in float at long range)
  index_t direct_max_length = 48;

  std::string str() const {
    std::ostringstream s;
    s << "B=" << B << " n=" << n << " C=" << C << (causal ? " causal" : " bidirectional") << " path=" << name(path)
      << " direct_max_length=" << direct_max_length << " strided=" << strided << " decaying=" << decaying;
    if (!varlen.empty()) {
      s << " varlen={";
      for (std::size_t i = 0; i < varlen.size(); ++i) s << (i ? "," : "") << varlen[i];
      s << "} cover=" << coefficient_length();
    }
    return s.str();
  }
  index_t longest() const {
    index_t m = varlen.empty() ? n : 0;
    for (index_t l : varlen) m = std::max(m, l);
    return m;
  }
  index_t coefficient_length() const { return cover > 0 ? cover : longest(); }
  index_t coefficient_count() const {
    return ToeplitzConvolution<double>::coefficient_count(causal, coefficient_length());
  }
  ToeplitzSpec spec() const { return {causal, path, direct_max_length}; }
};

inline ToeplitzCase toeplitz_case(index_t B, index_t n, index_t C, bool causal,
                                  ToeplitzSpec::Path path = ToeplitzSpec::Path::automatic) {
  ToeplitzCase c;
  c.B = B;
  c.n = n;
  c.C = C;
  c.causal = causal;
  c.path = path;
  return c;
}

inline ToeplitzCase toeplitz_varlen(std::vector<index_t> lengths, index_t C, bool causal, index_t cover = 0) {
  ToeplitzCase c = toeplitz_case(1, 0, C, causal);
  for (index_t l : lengths) c.n += l;
  c.varlen = std::move(lengths);
  c.cover = cover;
  return c;
}

struct ToeplitzProblemData {
  ToeplitzCase c;
  Dtype dtype;
  Tensor x, a;
  std::vector<double> xd, ad;
  Offsets cu;

  ToeplitzProblemData(const ToeplitzCase& cs, Dtype dt, std::uint64_t seed) : c(cs), dtype(dt) {
    std::mt19937_64 rng(seed);
    x = sequence_tensor();
    xd = normal_values(rng, x.numel(), dt);
    x.assign(xd);
    a = Tensor(dt, {c.C, c.coefficient_count(), 1, 1});
    ad = normal_values(rng, a.numel(), dt);
    if (c.decaying) {
      const index_t center = c.causal ? 0 : c.coefficient_length() - 1;
      for (index_t ch = 0; ch < c.C; ++ch)
        for (index_t i = 0; i < c.coefficient_count(); ++i) {
          double& v = ad[ch * c.coefficient_count() + i];
          v = round_to(dt, v * std::pow(0.5, static_cast<double>(std::abs(i - center))));
        }
    }
    a.assign(ad);
    if (!c.varlen.empty()) cu = Offsets::from_lengths(c.varlen, false);
  }

  // A [B, n, C, 1] tensor (in [B, C, n] memory when strided), not initialised.
  Tensor sequence_tensor() const {
    const Shape<4> shape{c.B, c.n, c.C, 1};
    return c.strided ? Tensor::transposed_layout(dtype, shape) : Tensor(dtype, shape);
  }
  Tensor output() const {
    Tensor y = sequence_tensor();
    y.poison();
    return y;
  }
  Tensor coefficient_output() const {
    Tensor da(dtype, a.shape());
    da.poison();
    return da;
  }
  const Offsets* offsets() const { return c.varlen.empty() ? nullptr : &cu; }
  CuSeqlens cu_view() const { return c.varlen.empty() ? CuSeqlens{} : cu.view(); }

  ToeplitzConvolution<double> op() const {
    ToeplitzConvolution<double> o;
    o.coefficients = lcsm::view(ad.data(), {c.C, c.coefficient_count()});
    o.causal = c.causal;
    return o;
  }
  View<const double, 3> dview(const std::vector<double>& v) const { return lcsm::view(v.data(), {c.B, c.n, c.C}); }
  View<double, 3> mview(std::vector<double>& v) const { return lcsm::view(v.data(), {c.B, c.n, c.C}); }

  std::vector<double> reference() const {
    std::vector<double> y(c.B * c.n * c.C, 0.0);
    reference::toeplitz_forward(op(), dview(xd), mview(y), cu_view());
    return y;
  }
  std::vector<double> eos_reference() const {
    std::vector<double> y(c.B * c.n * c.C, 0.0);
    reference::toeplitz_eos_forward(op(), dview(xd), mview(y), cu_view());
    return y;
  }
};

// The tolerance of a Toeplitz output: float FFTs (and float sums) err by about
// sqrt(log2 L) * eps * ||a|| ||x|| per output, which relative to ||y|| stays near 1e-6 for random
// inputs (measured: docs/performance.md); the general float32 bound covers it.
inline Tolerance toeplitz_tolerance(Dtype dt, const std::vector<double>& ref, double slack = 1.0) {
  return tolerance(dt, ref, slack);
}

}  // namespace lcsm::test
