// manifest.json and the .npy files of a case.
#include "case_files.hpp"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "error.hpp"
#include "judge.hpp"

namespace lcsm::ref {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kFormatVersion = 1;

const char* kLayout =
    "Every array is row-major (C order). q, k: [B, T, H, K]; v, o, do: [B, T, H, V]; x, y: [B, n, C]. "
    "Variable-length problems pack N sequences into B = 1 and give cu_seqlens, N + 1 int64 offsets; states are per "
    "sequence, [N, ...]. 16-bit arrays: float16 as '<f2', bfloat16 as its uint16 bit patterns '<u2'.";

test::Dtype parse_dtype(const std::string& where, const std::string& s) {
  for (test::Dtype d : {test::Dtype::f64, test::Dtype::f32, test::Dtype::f16, test::Dtype::bf16})
    if (s == test::name(d)) return d;
  fail(where, ": unknown dtype '", s, "'");
}

json tensor_entry(const Tensor64& t, const std::string& file) {
  return {{"name", t.name},
          {"file", file},
          {"shape", t.shape},
          {"layout", t.layout},
          {"storage", storage_name(t.storage)},
          {"npy_descr", npy_descr(t.storage)}};
}

void make_dir(const fs::path& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) fail(p.string(), ": cannot create the directory: ", ec.message());
}

}  // namespace

void write_case(const std::string& dir, const Problem& pr) {
  const fs::path root(dir);
  make_dir(root / "inputs");
  make_dir(root / "reference");
  const Descriptor& d = pr.descriptor;
  json m;
  m["format"] = "lcsm-ref case";
  m["format_version"] = kFormatVersion;
  m["descriptor"] = d.text();
  m["problem"] = {{"op", name(d.op)}, {"dir", name(d.dir)}, {"dtype", test::name(d.dtype)},
                  {"B", d.B},         {"T", d.T},           {"seed", d.seed},
                  {"state", d.state}, {"varlen", d.varlen}};
  if (d.op == Operator::toeplitz) m["problem"]["C"] = d.C;
  else m["problem"].update({{"H", d.H}, {"K", d.K}, {"V", d.V}});
  if (!d.decay.empty()) m["problem"]["decay"] = d.decay;
  if (d.op == Operator::cosformer || d.op == Operator::toeplitz) m["problem"]["causal"] = d.causal;
  if (d.op == Operator::cosformer) {
    m["problem"].update({{"map", d.elu ? "elu" : "relu"}, {"pos", d.pos}});
    if (d.M) m["problem"]["M"] = *d.M;
  }
  json conventions = {{"layout", kLayout}};
  for (const auto& [key, text] : pr.conventions) conventions[key] = text;
  m["conventions"] = conventions;
  m["inputs"] = json::array();
  for (const Tensor64& t : pr.inputs) {
    const std::string file = "inputs/" + t.name + ".npy";
    write_npy((root / file).string(), t.storage, t.shape, t.values);
    m["inputs"].push_back(tensor_entry(t, file));
  }
  m["outputs"] = json::array();
  for (const Expected& e : pr.outputs) {
    const std::string file = "reference/" + e.reference.name + ".npy";
    write_npy((root / file).string(), Storage::f64, e.reference.shape, e.reference.values);
    json o = tensor_entry(e.reference, file);
    o.erase("file");
    o["reference"] = file;
    o["storage"] = "float64 (the reference); produce " + std::string(storage_name(e.reference.storage));
    o["npy_descr"] = "<f8";
    o["judged_as"] = test::name(e.dtype);
    if (e.per_term) {
      const std::string terms = "reference/" + e.reference.name + ".terms.npy";
      write_npy((root / terms).string(), Storage::f64, e.reference.shape, e.terms);
      o["tolerance"] = {{"rule", "per_term"}, {"unit", e.unit}, {"terms", terms}};
    } else {
      const test::Tolerance t = tolerance_of(e);
      double ref_max = 0;
      for (double x : e.reference.values) ref_max = std::max(ref_max, std::fabs(x));
      o["tolerance"] = {{"rule", "relative"},
                        {"slack", e.slack},
                        {"rel_rms", t.rel_rms},
                        {"max_abs", t.max_abs_rel * ref_max},
                        {"floor", floor_of(e)}};
    }
    m["outputs"].push_back(o);
  }
  m["tolerance_policy"] = policy_text();
  m["check"] = "lcsm-ref check DIR [NAME=FILE.npy | NAME.npy ...]; with no files, DIR/output/<name>.npy";
  std::ofstream f(root / "manifest.json");
  if (!(f << m.dump(2) << "\n")) fail((root / "manifest.json").string(), ": cannot write");
}

LoadedCase load_case(const std::string& dir) {
  const fs::path root(dir);
  const std::string path = (root / "manifest.json").string();
  std::ifstream f(path);
  if (!f) fail(path, ": cannot open (is ", dir, " a directory written by lcsm-ref generate?)");
  LoadedCase c;
  c.dir = dir;
  try {
    const json m = json::parse(f);
    if (m.value("format", "") != "lcsm-ref case")
      fail(path, ": not an lcsm-ref manifest (no \"format\": \"lcsm-ref case\")");
    if (m.at("format_version").get<int>() > kFormatVersion)
      fail(path, ": format_version ", m.at("format_version").get<int>(), " is newer than this lcsm-ref reads (",
           kFormatVersion, ")");
    c.descriptor = m.at("descriptor").get<std::string>();
    for (const json& o : m.at("outputs")) {
      Expected e;
      e.reference.name = o.at("name").get<std::string>();
      e.reference.shape = o.at("shape").get<std::vector<index_t>>();
      e.reference.layout = o.value("layout", "");
      e.dtype = parse_dtype(path, o.at("judged_as").get<std::string>());
      const NpyArray ref = read_npy((root / o.at("reference").get<std::string>()).string());
      if (ref.shape != e.reference.shape)
        fail(path, ": output '", e.reference.name, "': the reference file has shape ", shape_string(ref.shape),
             ", the manifest says ", shape_string(e.reference.shape));
      e.reference.values = ref.values;
      const json& t = o.at("tolerance");
      if (t.at("rule").get<std::string>() == "per_term") {
        e.per_term = true;
        e.unit = t.at("unit").get<double>();
        e.terms = read_npy((root / t.at("terms").get<std::string>()).string()).values;
        if (e.terms.size() != e.reference.values.size())
          fail(path, ": output '", e.reference.name, "': the terms file does not match the reference's shape");
      } else {
        e.slack = t.at("slack").get<double>();
      }
      c.outputs.push_back(std::move(e));
    }
  } catch (const json::exception& e) {
    fail(path, ": malformed manifest: ", e.what());
  }
  if (c.outputs.empty()) fail(path, ": the manifest lists no outputs");
  return c;
}

std::vector<std::string> batch_cases(const std::string& dir) {
  const fs::path index = fs::path(dir) / "index.json";
  std::ifstream f(index);
  if (!f) return {};
  std::vector<std::string> cases;
  try {
    const json parsed = json::parse(f);  // named: a loop over a temporary's member would dangle
    for (const json& c : parsed.at("cases")) cases.push_back((fs::path(dir) / c.at("dir").get<std::string>()).string());
  } catch (const json::exception& e) {
    fail(index.string(), ": malformed batch index: ", e.what());
  }
  return cases;
}

void write_batch_index(const std::string& dir, const std::vector<std::string>& cases,
                       const std::vector<std::string>& descriptors) {
  json index = {{"format", "lcsm-ref batch"}, {"format_version", kFormatVersion}, {"cases", json::array()}};
  for (std::size_t i = 0; i < cases.size(); ++i)
    index["cases"].push_back({{"dir", cases[i]}, {"descriptor", descriptors[i]}});
  std::ofstream f(fs::path(dir) / "index.json");
  if (!(f << index.dump(2) << "\n")) fail(dir, "/index.json: cannot write");
}

}  // namespace lcsm::ref
