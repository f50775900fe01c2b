// The sm_90a forward's kernel traits (chunked/fwd_sm90.cuh): warpgroups, registers, the stage
// layout of the shared-memory ring and its depth, per decay kind and launch. Compile-time only.
#pragma once

#include "lcsm/cuda/chunked/decay.cuh"

// A knob, prepared and not yet run (docs/building.md): the fast mode's output launch on three stages
// and the rotated loop, as the exact mode's. On an H100 its output pass streamed at the copy rate
// and the rotation cost it 8-15%; on an H200 (2026-12-07i) the same pass runs at 66% of the copy
// rate in about the H100's cycles a chunk, bound by the consumers' chain as the exact mode is.
#ifndef LCSM_CUDA_SM90_FAST_ROTATED
#define LCSM_CUDA_SM90_FAST_ROTATED 0
#endif
// A knob, prepared and not yet run (docs/building.md): the vector gate's transform on two
// warpgroups, half a chunk's rows each, the first also issuing the loads (key_gate_halves_sm90.cuh).
#ifndef LCSM_CUDA_SM90_KEY_GATE_HALVES
#define LCSM_CUDA_SM90_KEY_GATE_HALVES 0
#endif

namespace lcsm::cuda::detail {

// kDeltaOnly: the layout of the segment-delta launch, which reads k and v only and keeps no state
// operand or output staging: its stages are two-thirds the size and it runs twice as many ahead
// (the loads in flight are what bound a pass that only streams k and v).
template <bool kExact, DecayKind kDecay, bool kDeltaOnly = false>
struct Sm90Traits {
  static_assert(kDecay == DecayKind::head || kDecay == DecayKind::token || kDecay == DecayKind::key,
                "the value gate and cosFormer run on the mma.sync kernel");
  static constexpr bool kTokenGate = kDecay == DecayKind::token;
  static constexpr bool kKeyGate = kDecay == DecayKind::key;  // chunked/key_gate_sm90.cuh
  // kValues per consumer warpgroup, kValueTile per CTA. A producer warpgroup loads the stages
  // (kProducerThreads); under the vector gate a second one transforms them (key_gate_sm90.cuh), so
  // that the loads run ahead as far as the ring allows instead of waiting for each transform. The
  // prepared kHalves form: both transform, half the rows each, and the first loads too.
  static constexpr bool kHalves = kKeyGate && LCSM_CUDA_SM90_KEY_GATE_HALVES;
  static constexpr int kChunk = 64, kKeys = 128, kValues = 64, kValueTile = 128;
  static constexpr int kProducerGroups = kKeyGate ? 2 : 1, kConsumers = 2, kProducerThreads = 128;
  static constexpr int kTransformThreads = kHalves ? 256 : 128;
  static constexpr int kThreads = 128 * (kProducerGroups + kConsumers);
  // Registers, 64K a CTA: 128 x 56 + 256 x 224. The vector gate's output launch: loads 64, the
  // transform 80 (kHalves: two of 72) and the consumers 184 (no spills; kHalves: the loading half spills);
  // its delta launch, whose consumers keep only the state: 72, 128 and 128 (kHalves: 128 each).
  static constexpr int kProducerRegisters = kHalves ? (kDeltaOnly ? 128 : 72) : kKeyGate ? (kDeltaOnly ? 72 : 64) : 56;
  static constexpr int kTransformRegisters = kHalves ? kProducerRegisters : kDeltaOnly ? 128 : 80;
  static constexpr int kConsumerRegisters = kKeyGate ? (kDeltaOnly ? 128 : 184) : 224;
  static_assert(128 * (kProducerRegisters + (kKeyGate ? kTransformRegisters : 0) + kConsumers * kConsumerRegisters) <=
                    65536,
                "registers");
  // Rows a transform thread loads before their math (key_gate_sm90.cuh): eight (a swizzle period)
  // where its registers allow, four in the output launch's 80.
  static constexpr int kTransformRows = kTransformRegisters >= 112 ? 8 : 4;
  // Swizzled tiles (tiles_sm90.cuh), bf16 elements; a stage ends with the chunk's gates (floats).
  // The pattern repeats every 1024 bytes: every stage starts on such a boundary.
  static constexpr int kQ = kDeltaOnly ? 0 : kChunk * kKeys, kK = kChunk * kKeys, kV = kChunk * kValueTile;
  static constexpr int kStageTiles = kQ + kK + kV;
  // The vector gate's: the chunk's gates (fp32) where the producer then writes the lo tiles of the
  // decayed q and k (two tiles of kChunk x kKeys), then e^T per key and the chunk's verdict (an int).
  static constexpr int kLoTiles = kStageTiles, kLoTile = kChunk * kKeys;
  static constexpr int kFactors = kLoTiles + 2 * kLoTile, kVerdict = kFactors + 2 * kKeys;
  static constexpr int kGateElements = kKeyGate ? 2 * kLoTile + 2 * kKeys + 2 : kTokenGate ? 2 * kChunk : 0;
  static constexpr int kStage = (kStageTiles + kGateElements + 511) / 512 * 512;
  // Per consumer: its rows of the state operand [value][key] (hi, and lo when exact), and its
  // output staging [token][value] (swizzled).
  static constexpr int kS = kValues * kKeys, kSPer = kDeltaOnly ? 0 : (kExact ? 2 : 1) * kS;
  // Outputs staged for 16-byte row stores (measured, H100 2026-12-07: writing the exact mode's
  // from the fragments instead was 5-10% slower, and the third stage it freed for the scalar gate
  // did not pay that back). The vector gate's exact mode has no room for it: its outputs go from
  // the fragments.
  static constexpr bool kStagedOutputs = !kDeltaOnly && !(kKeyGate && kExact);
  static constexpr int kOPer = kStagedOutputs ? kChunk * kValues : 0;
  static constexpr int kDecayBytes = kTokenGate ? kConsumers * 4 * kChunk * 16 : kKeyGate ? 0 : (kChunk + 1) * 4;
  static constexpr int kBarriersPerStage = kKeyGate ? 3 : 2;  // full, empty (and ready: transformed)
  // Ring depth, measured (H100, 2026-12-07, docs/performance.md): the delta launch keeps six (the
  // vector gate's, whose stages hold the gates too, three); the
  // exact mode's output launch gained 3% from a third stage where one fits (the per-head decay; the
  // scalar gate's scans leave room for two), the fast mode's lost 3-5% with it.
  // Shared memory for a ring of `stages`: stages, state operands, output staging, decay table,
  // barriers (the offsets below lay out the same).
  static constexpr int smem_bytes(int stages) {
    return ((stages * kStage + kConsumers * (kSPer + kOPer)) * 2 + kDecayBytes + 15) / 16 * 16 +
           kBarriersPerStage * stages * 8;
  }
  static constexpr int kStages = [] {
    int stages = kDeltaOnly ? 6 : (!kKeyGate && (kExact || LCSM_CUDA_SM90_FAST_ROTATED) ? 3 : 2);
    while (stages > 2 && smem_bytes(stages) > 227 * 1024) --stages;
    return stages;
  }();
  // The consumers' loop rotated by half a chunk (a stage is then held into the next chunk, so it
  // wants a third): measured (H100, 2026-12-07) 10% faster in exact mode, whose output launch the
  // consumers' chain binds, and 8-15% slower in fast mode, which streams at the copy rate.
  static constexpr bool kRotated = !kDeltaOnly && (kExact || LCSM_CUDA_SM90_FAST_ROTATED) && kStages >= 3;
  static constexpr int kOffS = kStages * kStage;
  static constexpr int kOffO = kOffS + kConsumers * kSPer;
  static constexpr int kOffDecay = (kOffO + kConsumers * kOPer) * 2;  // bytes: lambda^p, or per-warp gate scans
  static constexpr int kOffBarriers = (kOffDecay + kDecayBytes + 15) / 16 * 16;  // full, empty, ready [kStages]
  static constexpr int kSmemBytes = kOffBarriers + kBarriersPerStage * kStages * 8;
  static_assert(kSmemBytes == smem_bytes(kStages), "smem_bytes and the offsets disagree");
  static_assert(kSmemBytes <= 227 * 1024, "stages do not fit in shared memory");
  static_assert(!(kKeyGate && kRotated), "the rotated loop has no way to stop at a steep chunk");
};

}  // namespace lcsm::cuda::detail
