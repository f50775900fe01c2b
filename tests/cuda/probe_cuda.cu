// The CUDA runner's probe (support/probe.hpp): forward and decode of lightning attention and the two
// gates, and every entry of the Toeplitz convolution, float, over one device arena (cu_seqlens in device memory too),
// so that the argument checks the CUDA front-ends share with the CPU see the caller's layout.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "cuda/backend_cuda.cuh"
#include "support/probe.hpp"

namespace lcsm::test {
namespace {

struct DeviceArena {
  const ProbeCall& c;
  float* base;
  const std::int32_t* own_offsets;

  template <class T, int R>
  View<T, R> get(const char* name) const {
    const auto it = c.views.find(name);
    if (it == c.views.end()) return {};
    const ArenaView& a = it->second;
    if (static_cast<int>(a.shape.size()) != R || (!a.strides.empty() && static_cast<int>(a.strides.size()) != R))
      throw std::logic_error(std::string("probe: wrong rank for ") + name);
    Shape<R> shape{}, strides{};
    for (int d = 0; d < R; ++d) shape[d] = a.shape[d];
    strides = contiguous_strides<R>(shape);
    if (!a.strides.empty())
      for (int d = 0; d < R; ++d) strides[d] = a.strides[d];
    return {reinterpret_cast<T*>(base + a.offset), shape, strides};
  }
  CuSeqlens cu() const {
    if (c.offsets.empty()) return {};
    const std::int32_t* p =
        c.offsets_at >= 0 ? reinterpret_cast<const std::int32_t*>(base + c.offsets_at) : own_offsets;
    const index_t count = c.offsets_count >= 0 ? c.offsets_count : static_cast<index_t>(c.offsets.size());
    return CuSeqlens(View<const std::int32_t, 1>(p, {count}, {c.offsets_stride}));
  }
  index_t heads() const {
    const auto it = c.views.find("q");
    return it == c.views.end() || it->second.shape.size() != 4 ? 0 : std::min<index_t>(it->second.shape[2], 64);
  }
};

class CudaProbe final : public Probe {
 public:
  bool supports(Family f, Entry e) const override {
    if (f == Family::toeplitz) return true;
    return (f == Family::lightning || f == Family::scalar_gate || f == Family::vector_gate) && e != Entry::backward;
  }

  std::string call(const ProbeCall& c, index_t arena_floats) override {
    std::vector<float> host(static_cast<std::size_t>(arena_floats), -0.25f);
    std::vector<std::int32_t> offsets(c.offsets.begin(), c.offsets.end());
    if (c.offsets_at >= 0) std::memcpy(&host[c.offsets_at], offsets.data(), offsets.size() * sizeof(std::int32_t));
    const DeviceBuffer arena(host.data(), host.size() * sizeof(float));
    const DeviceBuffer own(offsets.data(), offsets.size() * sizeof(std::int32_t));
    const DeviceArena a{c, static_cast<float*>(arena.get()), static_cast<const std::int32_t*>(own.get())};
    try {
      run(a);
    } catch (const Error& e) {
      return e.what();
    }
    LCSM_CUDA_CHECK(cudaDeviceSynchronize());
    return "";
  }

 private:
  // The workspace a forward asks for, allocated unless it is absurd (a call with sizes that must be
  // rejected then meets its argument checks without one).
  template <class Op>
  static DeviceBuffer workspace(const Op& op, const View<const float, 4>& q, const View<const float, 4>& v,
                                const CuSeqlens& cu) {
    std::size_t bytes = 0;
    try {
      bytes = cuda::forward_workspace_bytes<float>(op, q, v, cu);
    } catch (const Error&) {
      return DeviceBuffer();
    }
    return bytes <= (std::size_t{256} << 20) ? DeviceBuffer(bytes) : DeviceBuffer();
  }

  template <class Op>
  static void run_op(const Op& op, const DeviceArena& a) {
    const auto q = a.get<const float, 4>("q"), k = a.get<const float, 4>("k"), v = a.get<const float, 4>("v");
    const auto o = a.get<float, 4>("o");
    if (a.c.entry == Entry::step) {
      lcsm::step<float>(test_device(DeviceBuffer()), op, q, k, v, o, a.get<float, 4>("state"));
      return;
    }
    const CuSeqlens cu = a.cu();
    const DeviceBuffer ws = workspace(op, q, v, cu);
    lcsm::forward<float>(test_device(ws), op, q, k, v, o,
                         {a.get<const float, 4>("initial_state"), a.get<float, 4>("final_state")}, cu);
  }

  // The Toeplitz entries, with the workspace each asks for (none where the query itself refuses).
  static void run_toeplitz(const DeviceArena& a) {
    ToeplitzConvolution<float> op;
    op.coefficients = a.get<const float, 2>("op.coefficients");
    const auto x = a.get<const float, 3>("x");
    const CuSeqlens cu = a.cu();
    auto workspace = [&](auto query) {
      std::size_t bytes = 0;
      try {
        bytes = query();
      } catch (const Error&) {
        return DeviceBuffer();
      }
      return bytes <= (std::size_t{256} << 20) ? DeviceBuffer(bytes) : DeviceBuffer();
    };
    if (a.c.entry == Entry::step) {
      ToeplitzHistory<float> h{a.get<float, 3>("history.inputs"), a.c.history_position};
      lcsm::step<float>(test_device(DeviceBuffer()), op, x, a.get<float, 3>("y"), h);
    } else if (a.c.entry == Entry::forward) {
      const DeviceBuffer ws = workspace([&] { return cuda::forward_workspace_bytes<float>(op, x, cu); });
      lcsm::forward<float>(test_device(ws), op, x, a.get<float, 3>("y"), cu);
    } else {
      const auto dx = a.get<float, 3>("dx");
      const auto da = a.get<float, 2>("da");
      const DeviceBuffer ws =
          workspace([&] { return cuda::backward_workspace_bytes<float>(op, x, dx.present(), da.present(), cu); });
      lcsm::backward<float>(test_device(ws), op, x, a.get<const float, 3>("dy"), dx, da, cu);
    }
  }

  static void run(const DeviceArena& a) {
    switch (a.c.family) {
      case Family::toeplitz: run_toeplitz(a); return;
      case Family::lightning: {
        LightningAttention op;
        op.log_decay.assign(static_cast<std::size_t>(a.heads()), -0.1);
        run_op(op, a);
        return;
      }
      case Family::scalar_gate: {
        ScalarGatedAttention<float> op;
        op.log_gate = a.get<const float, 3>("op.log_gate");
        run_op(op, a);
        return;
      }
      case Family::vector_gate: {
        VectorGatedAttention<float> op;
        op.log_gate = a.get<const float, 4>("op.log_gate");
        run_op(op, a);
        return;
      }
      default: throw std::logic_error("cuda probe: unsupported family");
    }
  }
};

}  // namespace

Probe* cuda_probe() {
  static CudaProbe probe;
  return &probe;
}

}  // namespace lcsm::test
