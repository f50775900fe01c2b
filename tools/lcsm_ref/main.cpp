// lcsm-ref: the float64 reference of lcsm's operators for ports in any language, after oneDNN's
// benchdnn: one driver, a problem descriptor, and three modes.
//
//   lcsm-ref generate DIR  op=lightning T=100 ...   inputs, output gradients, float64 references, manifest
//   lcsm-ref check DIR [NAME=FILE.npy ...]          a port's outputs against them; exit 0 pass, 1 fail
//   lcsm-ref run op=lightning T=100 ...             lcsm's own CPU (or --device cuda) backend, timed
//
// Each takes --batch FILE (one descriptor a line) instead of a descriptor. Errors (a bad
// descriptor, an unreadable or mis-shaped file) print one line and exit with status 2.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <new>
#include <string>

#include "commands.hpp"
#include "error.hpp"

int main(int argc, char** argv) {
  using namespace lcsm::ref;
  CLI::App app{
      "lcsm-ref: lcsm's float64 reference for ports. A problem descriptor is key=value words, e.g.\n"
      "  op=lightning dir=fwd B=1 T=100 H=2 K=64 V=64 dtype=bf16 decay=strong state=1 seed=1\n"
      "keys: op (lightning, scalar_gate, vector_gate, cosformer, toeplitz), dir (fwd, bwd, step), B, T (n), H, K, V,\n"
      "C (toeplitz channels), dtype (f32, f16, bf16, f64), decay (none, weak, strong, mixed, retnet), causal (0, 1),\n"
      "map (relu, elu), M, pos (cosformer), state (0, 1), varlen (lengths, e.g. 1,63,200), seed.\n"
      "Exit status: 0 pass, 1 an output over its tolerance, 2 an error. docs/ports.md explains the files and the "
      "policy.",
      "lcsm-ref"};
  app.require_subcommand(1, 1);
  app.set_version_flag("--version", "lcsm-ref 0.1.0 (lcsm 0.1.0)");
  std::string dir, batch;
  std::vector<std::string> words, files;
  int threads = 2, repeats = 3;
  std::string device = "cpu";

  CLI::App* generate = app.add_subcommand("generate", "write a problem's inputs, float64 references and manifest");
  generate->add_option("dir", dir, "directory to write (created)")->required();
  generate->add_option("descriptor", words, "key=value words of one problem");
  generate->add_option("--batch", batch, "a file of descriptors, one a line ('#' comments): one sub-directory each");

  CLI::App* check = app.add_subcommand("check", "judge a port's outputs against a generated problem");
  check->add_option("dir", dir, "a directory written by generate (a batch directory checks every case)")->required();
  check->add_option("files", files, "NAME=FILE.npy or NAME.npy per output; none: DIR/output/<name>.npy");

  CLI::App* run =
      app.add_subcommand("run", "run lcsm's CPU (or CUDA) backend on problems, timed, with the error table");
  run->add_option("descriptor", words, "key=value words of one problem");
  run->add_option("--batch", batch, "a file of descriptors, one a line");
  run->add_option("--threads", threads, "CPU threads (default 2)")->check(CLI::Range(1, 1024));
  run->add_option("--repeat", repeats, "timed calls after one warm-up call; the median is printed (default 3)")
      ->check(CLI::Range(1, 1000000));
  run->add_option("--device", device, "cpu (default) or cuda (where lcsm-ref was built with CUDA and a GPU is present)")
      ->check(CLI::IsMember({"cpu", "cuda"}));

  const std::string first = argc > 1 ? argv[1] : "";
  if (!first.empty() && first[0] != '-' && first != "generate" && first != "check" && first != "run") {
    std::fprintf(stderr,
                 "lcsm-ref: error: unknown command '%s' (expected generate, check or run; see lcsm-ref --help)\n",
                 argv[1]);
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "lcsm-ref: error: %s (see lcsm-ref --help)\n", e.what());
    return 2;
  }
  try {
    if (*generate) return generate_command(dir, descriptors_of(words, batch));
    if (*check) return check_command(dir, files);
    return run_command(descriptors_of(words, batch), threads, repeats, device == "cuda");
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lcsm-ref: error: out of memory (the problem is too large for this machine)\n");
  } catch (const std::exception& e) {  // ToolError, lcsm::Error, filesystem errors
    std::fprintf(stderr, "lcsm-ref: error: %s\n", e.what());
  }
  return 2;
}
