# sluice's recipes. On a fresh machine run them through ./just, which installs
# `just` and the wasm32-wasip2 target first.

# List the recipes.
default:
    @{{just_executable()}} --list

# Build the host (the bundled plugins are built and embedded by its build script).
build:
    cargo build -p sluice

# Run the quick-start pipeline: generator -> filter -> mask -> route -> stdout + logs/quickstart.log.
demo:
    cargo run -q -p sluice -- run pipelines/quickstart.toml

# Run every test: unit tests, plugin tests, integration tests.
test:
    scripts/setup-test-deps
    cargo build -p sluice
    cargo test --workspace
    scripts/check-install
    # No input shape may have a slow path: every shape's passthrough costs
    # at most SLUICE_SHAPES_MAX times the CPU time of the fastest's (the
    # least of each shape's rounds), in one release-mode run (about a
    # minute). 2 for now (the old slow path was 7-12x; the shapes are at
    # 1.0-1.9x, loguru's nested time the slowest; the goal is 1.5).
    SLUICE_SHAPES_GUARD=1 SLUICE_SHAPES_MAX=2 cargo bench -p sluice --bench shapes

# The property tests of every parser that faces input (pipeline files, HTTP
# bodies, forms, templates, checkpoints, timeline lines, plugin verdicts,
# OTLP protobuf and JSON, bulk answers, dead-letter records and lines, the
# Python %-formatter), longer than `just test` runs them (256 cases each):
# `just fuzz 100000`.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p sluice -p sluice-core -p sluice-timeline --lib prop_
    PROPTEST_CASES={{cases}} cargo test --release -p sluice-common prop_

# The soak test (not in CI): HTTP, Redis and rotated-file producers while
# sluice and Redis are killed with -9 and restarted and the plugin is
# swapped; checks the ledger at the end (lost must be 0) and prints the
# faults, duplicates and peak memory. `just soak 30` for half an hour.
soak minutes="5":
    scripts/setup-test-deps
    cargo build -p sluice
    SLUICE_SOAK_MINUTES={{minutes}} cargo test -p sluice-tests --test all -- --ignored --nocapture soak::

# Formatting and clippy, as CI wants them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# End-to-end and per-plugin benchmarks (release build), and the same filter
# in each plugin language (needs the toolchains; installed first).
bench:
    scripts/setup-plugin-tools
    cargo bench -p sluice --bench shapes --bench pipeline --bench timeline --bench reload --bench http --bench redis --bench cluster --bench nats --bench files --bench tail --bench sinks --bench mask --bench chain --bench shadow --bench buffers --bench machine --bench parse --bench languages
    cargo bench -p sluice-buffer --bench storage

# Build one plugin crate to wasm: `just plugin sluice-sample` -> target/plugins/wasm32-wasip2/plugin/sluice_sample.wasm
plugin crate:
    cargo build --profile plugin --target wasm32-wasip2 -p {{crate}} --target-dir target/plugins
    @echo "built target/plugins/wasm32-wasip2/plugin/$(echo {{crate}} | tr - _).wasm"
