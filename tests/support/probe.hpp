// Calls for the argument checks, where the memory layout itself is under test (aliasing, sizes and
// positions that overflow): every view is laid out by the case over one arena of floats in the
// backend's own memory (a GPU backend allocates it on the device and never copies tensors apart).
// Only the checks are under test: a call that passes them runs on the arena's values (every float
// -0.25: finite inputs, valid gates).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lcsm/core/tensor.hpp"

namespace lcsm::test {

enum class Family { lightning, scalar_gate, vector_gate, cosformer, toeplitz };
enum class Entry { forward, step, backward };

inline const char* name(Family f) {
  switch (f) {
    case Family::lightning: return "lightning";
    case Family::scalar_gate: return "scalar gate";
    case Family::vector_gate: return "vector gate";
    case Family::cosformer: return "cosformer";
    case Family::toeplitz: return "toeplitz";
  }
  return "?";
}
inline const char* name(Entry e) { return e == Entry::forward ? "forward" : e == Entry::step ? "step" : "backward"; }

// One argument's view: an offset in floats from the arena's start, its shape (the argument's rank)
// and its strides in elements (empty: row-major).
struct ArenaView {
  index_t offset = 0;
  std::vector<index_t> shape, strides;
};

struct ProbeCall {
  Family family = Family::lightning;
  Entry entry = Entry::forward;
  // By argument name, as the library's messages name them: q, k, v, o, do, dq, dk, dv,
  // initial_state, final_state, d_final_state, d_initial_state, state, op.log_gate, d_log_gate,
  // d_log_decay; Toeplitz: x, y, dy, dx, da, op.coefficients, history.inputs. Absent names: absent
  // views (optional arguments).
  std::map<std::string, ArenaView> views;
  std::vector<std::int64_t> offsets;  // cu_seqlens (empty: none), int32
  index_t offsets_at = -1;            // their place in the arena, in floats (-1: memory of their own)
  index_t offsets_count = -1;         // the count passed (-1: offsets.size())
  index_t offsets_stride = 1;
  std::vector<std::int64_t> positions;  // cosFormer's op.positions (empty: absent), host memory
  std::optional<index_t> length;        // cosFormer's op.length (M)
  index_t history_position = 0;         // Toeplitz step
};

class Probe {
 public:
  virtual ~Probe() = default;
  virtual bool supports(Family, Entry) const = 0;
  // "" when the call returned, else the lcsm::Error's message. The arena holds arena_floats floats.
  virtual std::string call(const ProbeCall& c, index_t arena_floats) = 0;
};

}  // namespace lcsm::test
