// Parsing and printing problem descriptors.
#include "descriptor.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <map>
#include <numeric>
#include <sstream>

#include "error.hpp"

namespace lcsm::ref {

namespace {

const char* const kKeys = "op, dir, B, T (n), H, K, V, C, dtype, decay, causal, map, M, pos, state, varlen, seed";

index_t parse_integer(const std::string& key, const std::string& value, index_t min) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || errno == ERANGE || v < min)
    fail("key '", key, "': expected an integer >= ", min, ", got '", value, "'");
  return v;
}

bool parse_bool(const std::string& key, const std::string& value) {
  if (value == "1" || value == "true" || value == "yes") return true;
  if (value == "0" || value == "false" || value == "no") return false;
  fail("key '", key, "': expected 0 or 1, got '", value, "'");
}

template <class E>
E parse_choice(const std::string& key, const std::string& value, const std::map<std::string, E>& choices) {
  const auto it = choices.find(value);
  if (it != choices.end()) return it->second;
  std::string names;
  for (const auto& c : choices) names += (names.empty() ? "" : ", ") + c.first;
  fail("key '", key, "': expected one of ", names, ", got '", value, "'");
}

const char* dtype_key(test::Dtype d) {
  switch (d) {
    case test::Dtype::f64: return "f64";
    case test::Dtype::f32: return "f32";
    case test::Dtype::f16: return "f16";
    case test::Dtype::bf16: return "bf16";
  }
  return "?";
}

// The decay presets of each operator (the test suite's names) and the default.
std::vector<std::string> decay_presets(Operator op) {
  switch (op) {
    case Operator::lightning: return {"mixed", "none", "weak", "strong", "retnet"};
    case Operator::scalar_gate:
    case Operator::vector_gate: return {"mixed", "none", "weak", "strong"};
    case Operator::toeplitz: return {"none", "strong"};
    case Operator::cosformer: return {};
  }
  return {};
}

// Which keys each operator takes (beyond op, dir, B, T, dtype, seed, varlen).
bool applies(Operator op, const std::string& key) {
  const bool attention = op != Operator::toeplitz;
  if (key == "H" || key == "K" || key == "V") return attention;
  if (key == "C") return op == Operator::toeplitz;
  if (key == "decay") return op != Operator::cosformer;
  if (key == "causal") return op == Operator::cosformer || op == Operator::toeplitz;
  if (key == "map" || key == "M" || key == "pos") return op == Operator::cosformer;
  if (key == "state") return attention;
  return true;
}

}  // namespace

const char* name(Operator op) {
  switch (op) {
    case Operator::lightning: return "lightning";
    case Operator::scalar_gate: return "scalar_gate";
    case Operator::vector_gate: return "vector_gate";
    case Operator::cosformer: return "cosformer";
    case Operator::toeplitz: return "toeplitz";
  }
  return "?";
}

const char* name(Direction dir) {
  switch (dir) {
    case Direction::forward: return "fwd";
    case Direction::backward: return "bwd";
    case Direction::step: return "step";
  }
  return "?";
}

Descriptor parse_descriptor(const std::vector<std::string>& words) {
  std::map<std::string, std::string> kv;
  for (const std::string& w : words) {
    const auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) fail("expected key=value, got '", w, "' (keys: ", kKeys, ")");
    std::string key = w.substr(0, eq);
    if (key == "n") key = "T";
    if (!kv.emplace(key, w.substr(eq + 1)).second) fail("key '", key, "' given twice");
  }
  if (!kv.count("op"))
    fail("no operator: expected op=lightning|scalar_gate|vector_gate|cosformer|toeplitz in the descriptor");
  Descriptor d;
  d.op = parse_choice<Operator>("op", kv["op"],
                                {{"lightning", Operator::lightning},
                                 {"scalar_gate", Operator::scalar_gate},
                                 {"vector_gate", Operator::vector_gate},
                                 {"cosformer", Operator::cosformer},
                                 {"toeplitz", Operator::toeplitz}});
  bool state_given = false;
  for (const auto& [key, value] : kv) {
    if (key == "op") continue;
    if (!applies(d.op, key)) fail("key '", key, "' does not apply to op=", name(d.op));
    if (key == "dir")
      d.dir = parse_choice<Direction>(
          key, value, {{"fwd", Direction::forward}, {"bwd", Direction::backward}, {"step", Direction::step}});
    else if (key == "B") d.B = parse_integer(key, value, 1);
    else if (key == "T") d.T = parse_integer(key, value, 0);
    else if (key == "H") d.H = parse_integer(key, value, 1);
    else if (key == "K") d.K = parse_integer(key, value, 1);
    else if (key == "V") d.V = parse_integer(key, value, 1);
    else if (key == "C") d.C = parse_integer(key, value, 1);
    else if (key == "M") d.M = parse_integer(key, value, 1);
    else if (key == "pos") d.pos = parse_integer(key, value, 0);
    else if (key == "seed") d.seed = static_cast<std::uint64_t>(parse_integer(key, value, 0));
    else if (key == "causal") d.causal = parse_bool(key, value);
    else if (key == "state") d.state = parse_bool(key, value), state_given = true;
    else if (key == "dtype")
      d.dtype = parse_choice<test::Dtype>(key, value,
                                          {{"f64", test::Dtype::f64},
                                           {"f32", test::Dtype::f32},
                                           {"f16", test::Dtype::f16},
                                           {"bf16", test::Dtype::bf16}});
    else if (key == "map") d.elu = parse_choice<bool>(key, value, {{"relu", false}, {"elu", true}});
    else if (key == "decay") {
      const auto presets = decay_presets(d.op);
      if (std::find(presets.begin(), presets.end(), value) == presets.end()) {
        std::string names;
        for (const auto& p : presets) names += (names.empty() ? "" : ", ") + p;
        fail("key 'decay': expected one of ", names, " for op=", name(d.op), ", got '", value, "'");
      }
      d.decay = value;
    } else if (key == "varlen") {
      std::istringstream in(value);
      std::string item;
      while (std::getline(in, item, ',')) d.varlen.push_back(parse_integer("varlen", item, 0));
      if (d.varlen.empty()) fail("key 'varlen': expected comma-separated lengths, got '", value, "'");
    } else {
      fail("unknown key '", key, "' (keys: ", kKeys, ")");
    }
  }
  if (d.decay.empty() && !decay_presets(d.op).empty()) d.decay = decay_presets(d.op).front();
  if (!state_given) d.state = d.dir == Direction::step && d.op != Operator::toeplitz;
  if (!d.varlen.empty()) {
    const index_t total = std::accumulate(d.varlen.begin(), d.varlen.end(), index_t(0));
    if (d.dir == Direction::step) fail("key 'varlen': decode (dir=step) takes [B, n] tokens, not packed sequences");
    if (kv.count("B") && d.B != 1) fail("key 'B': varlen packs the sequences into B = 1, got B = ", d.B);
    if (kv.count("T") && d.T != total)
      fail("key 'T': varlen lengths sum to ", total, ", got T = ", d.T, " (leave T out with varlen)");
    d.B = 1;
    d.T = total;
  }
  if (d.dir == Direction::step && d.T < 1) fail("key 'T': decode (dir=step) needs T >= 1 tokens, got T = 0");
  if (d.dir == Direction::step && !d.causal) fail("key 'causal': decode (dir=step) is causal only, got causal=0");
  if (d.op == Operator::cosformer) {
    index_t longest = d.varlen.empty() ? d.T : *std::max_element(d.varlen.begin(), d.varlen.end());
    if (d.dir == Direction::step && !d.M) d.M = d.pos + d.T;  // decode fixes M in advance
    if (d.M && *d.M < d.pos + longest)
      fail("key 'M': expected M >= pos + the longest sequence = ", d.pos + longest, ", got M = ", *d.M);
  }
  const index_t width =
      d.op == Operator::toeplitz ? d.C : d.H * std::max(d.K, d.V) * (d.op == Operator::cosformer ? 2 : 1);
  if (d.B * d.T * width > (index_t(1) << 26) || (d.op == Operator::toeplitz && d.T > 16384))
    fail("problem too large for lcsm-ref's float64 reference: B*T*H*max(K,V) = ", d.B * d.T * width,
         " (at most 2^26; Toeplitz n <= 16384)");
  return d;
}

std::string Descriptor::text() const {
  std::ostringstream s;
  s << "op=" << name(op) << " dir=" << name(dir) << " dtype=" << dtype_key(dtype);
  if (varlen.empty()) s << " B=" << B << " T=" << T;
  if (op == Operator::toeplitz) s << " C=" << C;
  else s << " H=" << H << " K=" << K << " V=" << V;
  if (!decay.empty()) s << " decay=" << decay;
  if (op == Operator::cosformer || op == Operator::toeplitz) s << " causal=" << causal;
  if (op == Operator::cosformer) {
    s << " map=" << (elu ? "elu" : "relu") << " pos=" << pos;
    if (M) s << " M=" << *M;
  }
  if (op != Operator::toeplitz) s << " state=" << state;
  if (!varlen.empty()) {
    s << " varlen=";
    for (std::size_t i = 0; i < varlen.size(); ++i) s << (i ? "," : "") << varlen[i];
  }
  s << " seed=" << seed;
  return s.str();
}

std::string Descriptor::slug() const {
  std::ostringstream s;
  s << name(op) << "-" << name(dir) << "-" << dtype_key(dtype) << "-T" << T;
  return s.str();
}

std::vector<Descriptor> read_batch(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail(path, ": cannot open the batch file");
  std::vector<Descriptor> out;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (w.empty()) continue;
    try {
      out.push_back(parse_descriptor(w));
    } catch (const ToolError& e) {
      fail(path, ":", number, ": ", e.what());
    }
  }
  if (out.empty()) fail(path, ": no descriptors (one per line, '#' starts a comment)");
  return out;
}

}  // namespace lcsm::ref
