// `generate DIR`: the inputs, the float64 references and the manifest of one problem, or of every
// line of a batch file (one sub-directory each, listed in DIR/index.json).
#include <cstdio>
#include <filesystem>

#include "case_files.hpp"
#include "commands.hpp"
#include "error.hpp"

namespace lcsm::ref {

std::vector<Descriptor> descriptors_of(const std::vector<std::string>& words, const std::string& batch) {
  if (!batch.empty() && !words.empty())
    fail("give a descriptor or --batch FILE, not both (got --batch ", batch, " and '", words.front(), "')");
  if (!batch.empty()) return read_batch(batch);
  if (words.empty()) fail("no problem: give a descriptor (e.g. op=lightning T=100) or --batch FILE");
  return {parse_descriptor(words)};
}

int generate_command(const std::string& dir, const std::vector<Descriptor>& problems) {
  if (problems.size() == 1) {
    write_case(dir, make_problem(problems.front()));
    std::printf("%s: %s\n", dir.c_str(), problems.front().text().c_str());
    return 0;
  }
  std::vector<std::string> cases, texts;
  for (std::size_t i = 0; i < problems.size(); ++i) {
    char prefix[32];
    std::snprintf(prefix, sizeof prefix, "%03zu-", i + 1);
    cases.push_back(prefix + problems[i].slug());
    texts.push_back(problems[i].text());
    write_case((std::filesystem::path(dir) / cases.back()).string(), make_problem(problems[i]));
    std::printf("%s/%s: %s\n", dir.c_str(), cases.back().c_str(), texts.back().c_str());
  }
  write_batch_index(dir, cases, texts);
  std::printf("%zu cases in %s (index.json lists them)\n", problems.size(), dir.c_str());
  return 0;
}

}  // namespace lcsm::ref
