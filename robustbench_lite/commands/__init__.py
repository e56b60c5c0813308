"""``robust-eval``: one module per subcommand over the shared argument module (:mod:`.args`).

    robust-eval [--model M] [--dataset D] [--suite S[,S...]] [...]   evaluate (the default command)
                [--json PATH] [--html PATH] [--gate EXPR ...] [--baseline RESULTS|run:ID] [--junit PATH]
    robust-eval train --model M --dataset D [--defence D[,D]] [...]  train a checkpoint (defences: list defences)
    robust-eval compare A.pt B.pt [RESULTS.json ...] [--suite full]    one table, deltas against the first
    robust-eval sweep [CONFIG.yaml] [--models A,B --datasets X --suites S] [--resume]   cached grid of cells
    robust-eval list models|datasets|suites|attacks|corruptions|shifts|defences [PATTERN]
    robust-eval report RESULTS [RESULTS ...] [-o PATH]                HTML report from results JSON / history runs
    robust-eval gate RESULTS --gate EXPR [...]                        check gates on saved results
    robust-eval history [--model P] [--dataset P] [--suite S] [--limit N] [--show ID]
    robust-eval plan --margin 0.01 [--accuracy 0.9]                  test images a +-margin 95% interval needs

Each module is wiring only: parse, build typed options, call the API, hand the result to
:mod:`robustbench_lite.outputs`. Exit codes: 0 ok, 1 a robustness gate failed, 2 a user error (one
line, no traceback unless ``--debug``), 3 some sweep cells failed, 130 interrupted.
"""
