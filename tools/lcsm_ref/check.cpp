// `check DIR [FILES...]`: a port's outputs against the references of a generated case (or of every
// case of a batch directory, each with its outputs in <case>/output/<name>.npy).
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>

#include "case_files.hpp"
#include "commands.hpp"
#include "error.hpp"
#include "judge.hpp"

namespace lcsm::ref {

namespace {

namespace fs = std::filesystem;

// NAME=PATH, or PATH whose file name (without .npy) names the output.
std::map<std::string, std::string> name_files(const LoadedCase& c, const std::vector<std::string>& files) {
  std::map<std::string, std::string> out;
  std::string names;
  for (const Expected& e : c.outputs) names += (names.empty() ? "" : ", ") + e.reference.name;
  for (const std::string& f : files) {
    const auto eq = f.find('=');
    const std::string name = eq != std::string::npos ? f.substr(0, eq) : fs::path(f).stem().string();
    const std::string path = eq != std::string::npos ? f.substr(eq + 1) : f;
    bool known = false;
    for (const Expected& e : c.outputs) known |= e.reference.name == name;
    if (!known)
      fail(f, ": '", name, "' is not an output of this problem (outputs: ", names,
           "); name the file after the output or write NAME=FILE");
    if (!out.emplace(name, path).second) fail("output '", name, "' given twice");
  }
  if (files.empty())
    for (const Expected& e : c.outputs) {
      const fs::path p = fs::path(c.dir) / "output" / (e.reference.name + ".npy");
      if (fs::exists(p)) out.emplace(e.reference.name, p.string());
    }
  if (out.empty())
    fail(c.dir, ": no outputs to check: give files (", names, ") or write them to ",
         (fs::path(c.dir) / "output").string(), "/<name>.npy");
  return out;
}

// Judges the given outputs of one case and prints its table; true when all passed.
bool check_case(const std::string& dir, const std::vector<std::string>& files) {
  const LoadedCase c = load_case(dir);
  const std::map<std::string, std::string> given = name_files(c, files);
  std::vector<Row> rows;
  std::vector<std::string> missing;
  for (const Expected& e : c.outputs) {
    const auto it = given.find(e.reference.name);
    if (it == given.end()) {
      missing.push_back(e.reference.name);
      continue;
    }
    const NpyArray got = read_npy(it->second);
    if (got.storage == Storage::i64)
      fail(it->second, ": output '", e.reference.name, "' must be floating point, got int64");
    if (got.shape != e.reference.shape)
      fail(it->second, ": output '", e.reference.name, "': expected shape ", shape_string(e.reference.shape), " ",
           e.reference.layout, ", got ", shape_string(got.shape));
    rows.push_back(judge_output(e, got.values, storage_name(got.storage)));
  }
  bool ok = true;
  for (const Row& r : rows) ok &= r.ok;
  std::printf("%s: %s: %s\n", dir.c_str(), c.descriptor.c_str(), ok ? "pass" : "FAIL");
  std::fflush(stdout);
  print_table(std::cout, rows, missing);
  std::cout.flush();
  return ok;
}

}  // namespace

int check_command(const std::string& dir, const std::vector<std::string>& files) {
  const std::vector<std::string> cases = batch_cases(dir);
  if (cases.empty()) return check_case(dir, files) ? 0 : 1;
  if (!files.empty())
    fail(dir, " is a batch directory: its outputs are read from <case>/output/<name>.npy, give no files");
  int passed = 0, failed = 0;
  for (const std::string& c : cases) {
    bool ok = false;
    try {
      ok = check_case(c, {});
    } catch (const ToolError& e) {
      std::printf("%s: FAIL: %s\n", c.c_str(), e.what());
    }
    ++(ok ? passed : failed);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

}  // namespace lcsm::ref
