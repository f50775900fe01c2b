// A problem descriptor: one operator, one direction, a shape, a dtype, the decay and the seed, as
// `key=value` words (benchdnn's idea: one line describes one problem), e.g.
//   op=lightning dir=bwd B=2 T=65 H=2 K=72 V=64 dtype=f32 decay=strong state=1 seed=7
// Every word is checked; a bad one is a ToolError that names the key, what it accepts and what it got.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "lcsm/core/tensor.hpp"
#include "support/host_tensor.hpp"

namespace lcsm::ref {

enum class Operator { lightning, scalar_gate, vector_gate, cosformer, toeplitz };
enum class Direction { forward, backward, step };

const char* name(Operator op);
const char* name(Direction dir);

struct Descriptor {
  Operator op = Operator::lightning;
  Direction dir = Direction::forward;
  index_t B = 1, T = 64, H = 2, K = 32, V = 32;
  index_t C = 4;  // toeplitz: channels (T is its length n)
  test::Dtype dtype = test::Dtype::f32;
  std::string decay;            // preset name; empty: the operator's default
  bool causal = true;           // cosformer, toeplitz
  bool elu = false;             // cosformer feature map: 1 + ELU instead of ReLU
  std::optional<index_t> M;     // cosformer length constant
  index_t pos = 0;              // cosformer: position of every sequence's first token
  bool state = false;           // initial state in (and, backward, a final-state gradient)
  std::vector<index_t> varlen;  // packed sequence lengths (B = 1, T = their sum)
  std::uint64_t seed = 1;

  index_t sequences() const { return varlen.empty() ? B : static_cast<index_t>(varlen.size()); }
  bool gated() const { return op == Operator::scalar_gate || op == Operator::vector_gate; }
  // The canonical text: every key, in a fixed order (what `generate` records and prints).
  std::string text() const;
  // A short name for a directory: "lightning-fwd-f32-T65".
  std::string slug() const;
};

// Parses the words of one descriptor (a command line, or a line of a batch file).
Descriptor parse_descriptor(const std::vector<std::string>& words);

// One descriptor per non-empty line; '#' starts a comment. Errors name the file and line.
std::vector<Descriptor> read_batch(const std::string& path);

}  // namespace lcsm::ref
