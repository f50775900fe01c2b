// The argument checks where the memory layout is the point, on every entry point the backend has
// (support/probe.hpp): the aliasing rule (every output disjoint from every input and every other
// output, the in-place arguments exactly in place or not at all) and sizes, strides and positions
// whose arithmetic overflows. Each case is generated for every (family, entry, argument), so a new
// argument or entry point is covered by adding it to args_of().
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "support/backend.hpp"
#include "support/probe.hpp"

using namespace lcsm;
using namespace lcsm::test;
using Catch::Contains;

namespace {

struct Arg {
  std::string name;
  std::vector<index_t> shape;
  bool output = false;
};

// B = 1, T = 4 (varlen: two sequences of 1 and 3 tokens), H = 2, K = 2, V = 3; decode: 2 tokens;
// Toeplitz: n = 4, C = 3, decode one token into a history of 4.
constexpr index_t kB = 1, kT = 4, kH = 2, kK = 2, kV = 3, kSteps = 2, kC = 3;

std::vector<Arg> args_of(Family f, Entry e, bool varlen) {
  const index_t N = varlen ? 2 : kB;
  if (f == Family::toeplitz) {
    if (e == Entry::forward) return {{"x", {kB, kT, kC}}, {"op.coefficients", {kC, kT}}, {"y", {kB, kT, kC}, true}};
    if (e == Entry::step)
      return {{"x", {kB, 1, kC}},
              {"op.coefficients", {kC, kT}},
              {"y", {kB, 1, kC}, true},
              {"history.inputs", {kB, kT, kC}, true}};
    return {{"x", {kB, kT, kC}},
            {"dy", {kB, kT, kC}},
            {"op.coefficients", {kC, kT}},
            {"dx", {kB, kT, kC}, true},
            {"da", {kC, kT}, true}};
  }
  const bool cos = f == Family::cosformer;
  const index_t SK = cos ? 2 * kK : kK, SV = cos ? kV + 1 : kV, T = e == Entry::step ? kSteps : kT;
  std::vector<Arg> a{{"q", {kB, T, kH, kK}}, {"k", {kB, T, kH, kK}}, {"v", {kB, T, kH, kV}}};
  if (f == Family::scalar_gate) a.push_back({"op.log_gate", {kB, T, kH}});
  if (f == Family::vector_gate) a.push_back({"op.log_gate", {kB, T, kH, kK}});
  if (e == Entry::forward) {
    a.push_back({"o", {kB, T, kH, kV}, true});
    a.push_back({"initial_state", {N, kH, SK, SV}});
    a.push_back({"final_state", {N, kH, SK, SV}, true});
  } else if (e == Entry::step) {
    a.push_back({"o", {kB, T, kH, kV}, true});
    a.push_back({"state", {kB, kH, SK, SV}, true});
  } else {
    a.push_back({"do", {kB, T, kH, kV}});
    a.push_back({"dq", {kB, T, kH, kK}, true});
    a.push_back({"dk", {kB, T, kH, kK}, true});
    a.push_back({"dv", {kB, T, kH, kV}, true});
    a.push_back({"initial_state", {N, kH, SK, SV}});
    a.push_back({"d_final_state", {N, kH, SK, SV}});
    a.push_back({"d_initial_state", {N, kH, SK, SV}, true});
    if (f == Family::lightning) a.push_back({"d_log_decay", {kH}, true});
    if (f == Family::scalar_gate) a.push_back({"d_log_gate", {kB, T, kH}, true});
    if (f == Family::vector_gate) a.push_back({"d_log_gate", {kB, T, kH, kK}, true});
  }
  return a;
}

index_t count_of(const std::vector<index_t>& shape) {
  index_t n = 1;
  for (index_t e : shape) n *= e;
  return n;
}

// Every argument in a slot of its own: slots as large as the largest argument plus a gap, so that
// an argument moved onto another's slot overlaps that one only.
struct Layout {
  std::vector<Arg> args;
  index_t slot = 0;
  ProbeCall call;

  Layout(Family f, Entry e, bool varlen) : args(args_of(f, e, varlen)) {
    for (const Arg& a : args) slot = std::max(slot, count_of(a.shape));
    slot += 8;
    call.family = f;
    call.entry = e;
    for (std::size_t i = 0; i < args.size(); ++i)
      call.views[args[i].name] = ArenaView{static_cast<index_t>(i) * slot, args[i].shape, {}};
    if (varlen) call.offsets = {0, 1, kT};
    if (f == Family::cosformer && e == Entry::step) {
      call.length = 100;
      call.positions = std::vector<std::int64_t>(kB, 0);
    }
  }
  index_t arena() const { return static_cast<index_t>(args.size() + 2) * slot; }
  index_t slot_of(const std::string& name) const {
    for (std::size_t i = 0; i < args.size(); ++i)
      if (args[i].name == name) return static_cast<index_t>(i) * slot;
    return -1;
  }
};

struct Combo {
  Family family;
  Entry entry;
  bool varlen;
};

// Every (family, entry) the backend's probe has, with cu_seqlens where the entry takes them.
std::vector<Combo> combos(Probe& p) {
  std::vector<Combo> out;
  for (Family f : {Family::lightning, Family::scalar_gate, Family::vector_gate, Family::cosformer, Family::toeplitz})
    for (Entry e : {Entry::forward, Entry::step, Entry::backward}) {
      if (!p.supports(f, e)) continue;
      out.push_back({f, e, false});
      if (e != Entry::step) out.push_back({f, e, true});
    }
  return out;
}

Probe* probe() {
  Probe* p = backend().probe();
  if (!p) WARN(backend().name() << " has no probe: nothing checked");
  return p;
}

std::string describe(const Combo& c) {
  return std::string(name(c.family)) + " " + name(c.entry) + (c.varlen ? " varlen" : "");
}

}  // namespace

TEST_CASE("arguments: every entry point runs on a disjoint layout", "[validation][aliasing]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    const Layout l(c.family, c.entry, c.varlen);
    INFO(backend().name() << " " << describe(c));
    CHECK(p->call(l.call, l.arena()) == "");
  }
}

// Issue 14: a final state over q or k, an output over the initial state, a decode state over q, a
// d-initial-state over dq, dk or partly over the d-final-state, a d-log-decay over dq ran silently.
TEST_CASE("arguments: every output overlapping any other argument is an error naming both", "[validation][aliasing]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p))
    for (const Arg& out : args_of(c.family, c.entry, c.varlen)) {
      if (!out.output) continue;
      for (const Arg& other : args_of(c.family, c.entry, c.varlen)) {
        if (other.name == out.name) continue;
        Layout l(c.family, c.entry, c.varlen);
        // Onto the other's slot, one element in: a partial overlap (never exactly the same view).
        l.call.views[out.name].offset = l.slot_of(other.name) + 1;
        INFO(backend().name() << " " << describe(c) << ": '" << out.name << "' over '" << other.name << "'");
        CHECK_THAT(p->call(l.call, l.arena()),
                   Contains("'" + out.name + "'") && Contains("'" + other.name + "'") && Contains("disjoint"));
      }
    }
}

TEST_CASE("arguments: an output over cu_seqlens is an error naming both", "[validation][aliasing][varlen]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    if (!c.varlen) continue;
    for (const Arg& out : args_of(c.family, c.entry, true)) {
      if (!out.output) continue;
      Layout l(c.family, c.entry, true);
      l.call.offsets_at = l.slot_of(out.name) + 1;  // the offsets inside the output's memory
      INFO(backend().name() << " " << describe(c) << ": '" << out.name << "' over cu_seqlens");
      CHECK_THAT(p->call(l.call, l.arena()),
                 Contains("'" + out.name + "'") && Contains("'cu_seqlens'") && Contains("disjoint"));
    }
  }
}

TEST_CASE("arguments: the final state exactly over the initial state is in place", "[validation][aliasing]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    if (c.entry != Entry::forward || c.family == Family::toeplitz) continue;
    Layout l(c.family, c.entry, c.varlen);
    l.call.views["final_state"].offset = l.slot_of("initial_state");
    INFO(backend().name() << " " << describe(c));
    CHECK(p->call(l.call, l.arena()) == "");
    // The same memory with other strides (the last two dimensions transposed) is not the same view.
    const std::vector<index_t> sh = l.call.views["final_state"].shape;
    l.call.views["final_state"].strides = {sh[1] * sh[2] * sh[3], sh[2] * sh[3], 1, sh[2]};
    CHECK_THAT(p->call(l.call, l.arena()),
               Contains("'final_state'") && Contains("'initial_state'") && Contains("exactly the same view"));
  }
}

// Issue 14: a view of [2^32, 2^32, 1, 1] wrapped to 0 elements and was treated as absent; T = 2^62
// overflowed and overran the heap. Every argument, with a count that overflows, with strides whose
// extent overflows, and with T = 2^62 over broadcast (zero-stride) inputs.
TEST_CASE("arguments: sizes and strides that overflow are errors naming the argument", "[validation][overflow]") {
  Probe* p = probe();
  if (!p) return;
  const index_t big = index_t{1} << 32, huge = index_t{1} << 62;
  for (const Combo& c : combos(*p))
    for (const Arg& a : args_of(c.family, c.entry, c.varlen)) {
      INFO(backend().name() << " " << describe(c) << ": '" << a.name << "'");
      if (a.shape.size() >= 2) {
        Layout l(c.family, c.entry, c.varlen);
        ArenaView& v = l.call.views[a.name];
        v.shape[0] = big;
        v.shape[1] = big;
        v.strides.assign(v.shape.size(), 0);  // 2^64 elements in one float: only the count overflows
        INFO("count " << big << " x " << big);
        CHECK_THAT(p->call(l.call, l.arena()), Contains("'" + a.name + "'") && Contains("64 bits"));
      }
      Layout l(c.family, c.entry, c.varlen);
      ArenaView& v = l.call.views[a.name];
      v.strides.assign(v.shape.size(), 1);
      v.strides[0] = huge;  // shape[0] >= 1: a second row at 2^62 floats = 2^64 bytes
      v.shape[0] = std::max<index_t>(v.shape[0], 2);
      INFO("stride " << huge);
      CHECK_THAT(p->call(l.call, l.arena()), Contains("'" + a.name + "'") && Contains("64 bits"));
    }
}

// T = 2^60 over broadcast (zero-stride) inputs: every count fits in 64 bits, but the outputs' bytes
// do not (the T = 2^62 with H = K = V = 1).
TEST_CASE("arguments: T = 2^60 over broadcast inputs is an error", "[validation][overflow]") {
  Probe* p = probe();
  if (!p) return;
  const index_t T = index_t{1} << 60;
  for (const Combo& c : combos(*p)) {
    if (c.varlen || c.entry == Entry::step) continue;
    Layout l(c.family, c.entry, false);
    for (const Arg& a : l.args) {
      ArenaView& v = l.call.views[a.name];
      const bool coefficients = a.name == "op.coefficients" || a.name == "da";  // Toeplitz [C, n]
      const bool per_token = coefficients || (v.shape.size() >= 3 && a.name.find("state") == std::string::npos);
      if (!per_token) continue;
      v.shape[1] = T;                                      // [B, T, ...] or [C, n]
      if (!a.output) v.strides.assign(v.shape.size(), 0);  // inputs may be broadcast
    }
    INFO(backend().name() << " " << describe(c));
    CHECK_THAT(p->call(l.call, l.arena()), Contains("extent fits in 64 bits and in the address space"));
  }
}

TEST_CASE("arguments: cu_seqlens whose extent overflows is an error", "[validation][overflow][varlen]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    if (!c.varlen) continue;
    Layout l(c.family, c.entry, true);
    l.call.offsets_count = index_t{1} << 62;
    l.call.offsets_stride = 4;
    INFO(backend().name() << " " << describe(c));
    CHECK_THAT(p->call(l.call, l.arena()), Contains("'cu_seqlens'") && Contains("64 bits"));
  }
}

// Issue 14: a Toeplitz decode at position INT64_MAX passed the room check by overflow; cosFormer
// positions near INT64_MAX overflowed the M check.
TEST_CASE("arguments: positions near INT64_MAX are errors", "[validation][overflow]") {
  Probe* p = probe();
  if (!p) return;
  const index_t top = std::numeric_limits<index_t>::max();
  if (p->supports(Family::toeplitz, Entry::step)) {
    Layout l(Family::toeplitz, Entry::step, false);
    for (index_t pos : {top, top - 1, index_t{-1}, kT}) {
      l.call.history_position = pos;
      INFO("position " << pos);
      CHECK_THAT(p->call(l.call, l.arena()), Contains("'history.position'") && Contains("room for 1 more"));
    }
    l.call.history_position = kT - 1;
    CHECK(p->call(l.call, l.arena()) == "");
  }
  for (Entry e : {Entry::forward, Entry::step, Entry::backward}) {
    if (!p->supports(Family::cosformer, e)) continue;
    Layout l(Family::cosformer, e, false);
    l.call.length = top;
    l.call.positions = std::vector<std::int64_t>(kB, top - 1);
    INFO("cosformer " << name(e) << " at position INT64_MAX - 1 with M = INT64_MAX");
    CHECK_THAT(p->call(l.call, l.arena()), Contains("'op.positions'") && Contains("64 bits"));
    l.call.positions = std::vector<std::int64_t>(kB, top - 10);
    CHECK(p->call(l.call, l.arena()) == "");
    l.call.length.reset();  // M unset: each sequence's end, position + length
    if (e != Entry::step) {
      l.call.positions = std::vector<std::int64_t>(kB, top - 1);
      CHECK_THAT(p->call(l.call, l.arena()), Contains("'op.positions'") && Contains("64 bits"));
    }
  }
}

// Found by the fuzzer: with an empty batch (B = 0) the state size check multiplied by 0 and let
// K = 2^62 through (2K then overflowed). Sizes of empty arguments are checked like any others; and
// a call without tokens plans nothing, whatever its batch (B = 2^40: no view bounds it).
TEST_CASE("arguments: empty batches with wild sizes", "[validation][overflow]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    if (c.varlen || c.family == Family::toeplitz) continue;
    INFO(backend().name() << " " << describe(c));
    Layout l(c.family, c.entry, false);
    for (auto& [name, v] : l.call.views) {
      if (name.find("state") != std::string::npos && c.entry != Entry::step) continue;
      if (v.shape.size() == 4 && name != "d_log_gate" && name != "op.log_gate") {
        v.shape[0] = 0;  // B = 0 (N = 0 for the states)
        if (name == "q" || name == "k" || name == "dq" || name == "dk") v.shape[3] = index_t{1} << 62;
      }
      if (name == "op.log_gate" || name == "d_log_gate") v.shape[0] = 0;
      if (v.shape.size() == 4 && (name == "op.log_gate" || name == "d_log_gate")) v.shape[3] = index_t{1} << 62;
    }
    for (const char* s : {"initial_state", "final_state", "d_final_state", "d_initial_state"}) l.call.views.erase(s);
    CHECK_THAT(p->call(l.call, l.arena()), Contains("'q'") && Contains("64 bits"));
  }
  for (const Combo& c : combos(*p)) {
    if (c.varlen || c.entry == Entry::step) continue;
    INFO(backend().name() << " " << describe(c) << ": T = 0, B = 2^40, no states");
    Layout l(c.family, c.entry, false);
    for (const char* s : {"initial_state", "final_state", "d_final_state", "d_initial_state", "da"})
      l.call.views.erase(s);
    for (auto& [name, v] : l.call.views) {
      if (name == "d_log_decay") continue;
      if (name == "op.coefficients") {
        v.shape[1] = 0;  // [C, n] with n = 0
        continue;
      }
      v.shape[0] = index_t{1} << 40;
      v.shape[1] = 0;
    }
    CHECK(p->call(l.call, l.arena()) == "");
  }
}

// K is bounded by no output's memory (q and k may be broadcast) while the scratch grows with K x V.
TEST_CASE("arguments: head dimensions above 16384 are errors", "[validation][overflow]") {
  Probe* p = probe();
  if (!p) return;
  for (const Combo& c : combos(*p)) {
    if (c.varlen || c.family == Family::toeplitz) continue;
    INFO(backend().name() << " " << describe(c));
    Layout l(c.family, c.entry, false);
    for (auto& [name, v] : l.call.views) {
      const bool keyed = name == "q" || name == "k" || name == "dq" || name == "dk" ||
                         (v.shape.size() == 4 && (name == "op.log_gate" || name == "d_log_gate"));
      if (!keyed) continue;
      v.shape[3] = 16385;  // inputs broadcast; outputs row-major (the check comes before any is touched)
      if (name == "q" || name == "k" || name == "op.log_gate") v.strides.assign(v.shape.size(), 0);
    }
    CHECK_THAT(p->call(l.call, l.arena()), Contains("'q'") && Contains("K, V <= 16384"));
  }
}
