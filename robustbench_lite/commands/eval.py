"""``robust-eval [--model M] [--suite S ...]``: evaluate one model (the default command)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustbench_lite import __version__
from robustbench_lite.commands import args as a
from robustbench_lite.sources.contract import InputContract


def parser() -> argparse.ArgumentParser:
    p = a.Parser(prog=a.PROG, description="Evaluate an image classifier's robustness and efficiency.",
                 epilog="other commands: 'robust-eval train --help', 'robust-eval compare --help',\n"
                        "  'robust-eval list models', 'robust-eval report --help',"
                        " 'robust-eval gate --help', 'robust-eval history --help',\n"
                        "  'robust-eval plan --help' (how many test images an interval needs)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="architecture: a zoo name, torchvision:NAME or timm:NAME (default: the checkpoint's "
                        "model, else shufflenetv2); names a state_dict's architecture; see 'robust-eval list models'")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="the model file to evaluate, recognised by content: a robust-eval checkpoint, a state_dict "
                        "or safetensors file (with --model), TorchScript, torch.export (.pt2) or ONNX; see "
                        "'robust-eval list formats' (default: the cached quick baseline, trained on first use)")
    g.add_argument("--surrogate", default=None, metavar="PATH",
                   help="a differentiable model file the adversarial suite crafts its attacks on, scored on the "
                        "model (transfer); needed for models without gradients (ONNX)")
    g.add_argument("--pretrained", action="store_true",
                   help="without --checkpoint: use the quick baseline fine-tuned from ImageNet weights")
    InputContract.add_arguments(p.add_argument_group(
        "model input (what a shipped model expects; default: read from the file or a MODEL.json beside it)"))
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=None,
                   help="dataset name (default: the checkpoint's dataset, else fashion-mnist); "
                        "see 'robust-eval list datasets'")
    g.add_argument("--limit", type=a.positive_int, default=None, metavar="N",
                   help="evaluate the first N test images (default: all)")
    g.add_argument("--batch-size", type=a.positive_int, default=256, help="evaluation batch size (default: 256)")
    a.add_inference_arguments(p)
    g = p.add_argument_group("suites")
    g.add_argument("--suite", action="append", default=None, metavar="NAME[,NAME]",
                   help="suites to run, repeatable or comma-separated; 'full' runs every suite "
                        "but monitor (default: clean,efficiency); see 'robust-eval list suites'")
    a.add_suite_arguments(p)
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="PATH", help="write the results JSON here (default: none)")
    g.add_argument("--records", default=None, metavar="PATH.npz",
                   help="write the per-image records here (right or wrong per image and condition, the predicted "
                        "class; the JSON points to them): paired comparisons and gates against this run use them "
                        "(default: none)")
    g.add_argument("--html", default=None, metavar="PATH",
                   help="write the HTML stress-test report here: one self-contained file (default: none)")
    g.add_argument("--examples", type=a.non_negative_int, default=8, metavar="N",
                   help="with --html: test images in the report's clean/corrupted/adversarial example grid, "
                        "also stored in the JSON under 'examples' (default: 8; 0: no grid)")
    g.add_argument("--calibrate", action="store_true",
                   help="temperature scaling, fitted on the clean test split (each half scaled by the temperature of "
                        "the other): ECE and NLL before and after on clean data and every corruption and shift "
                        "condition")
    g.add_argument("--cam-layer", default=None, metavar="NAME",
                   help="with --html: the layer whose Grad-CAM heatmaps the example grid shows, as a dotted module "
                        "name (default: the deepest block whose maps are still at least 4x4)")
    g.add_argument("--no-history", action="store_true",
                   help="do not record this run in the run history ($ROBUST_EVAL_HOME/history.sqlite)")
    a.add_gate_arguments(p)
    a.add_run_arguments(p)
    return p


def run(argv: Sequence[str]) -> int:
    from robustbench_lite import outputs, records
    from robustbench_lite.api import evaluate
    from robustbench_lite.config import DEFAULT_SUITES, RunConfig
    from robustbench_lite.gate_modes import GateMode
    from robustbench_lite.suites import expand_suites, options_from_args

    args = a.parse(parser(), argv)
    suites = expand_suites(a.names(args.suite, "--suite", "clean,corruptions")) or list(DEFAULT_SUITES)
    gate_mode = GateMode.parse(args.gate_mode)
    suite_options = options_from_args(args, suites)
    gate_list, baseline, baseline_label = outputs.load_gates(args.gate, args.baseline, suites, suite_options)
    a.check_outputs({"--json": args.json, "--html": args.html, "--junit": args.junit, "--records": args.records},
                    {"--checkpoint": args.checkpoint, "--baseline": args.baseline})
    if args.records:
        records.check_path(args.records)
    config = RunConfig(
        model=args.model, dataset=args.dataset, suites=suites,
        checkpoint=args.checkpoint, pretrained=args.pretrained, limit=args.limit, batch_size=args.batch_size,
        device=args.device, seed=args.seed, data_dir=args.data_dir, show_progress=a.show_progress(args),
        suite_options=suite_options, examples=args.examples if args.html else 0, debug=args.debug,
        cam_layer=args.cam_layer, calibrate=args.calibrate,
        contract=InputContract.from_args(args), surrogate=args.surrogate, precision=args.precision,
        inference=args.inference,
    )
    result = evaluate(config, log=a.log)  # checks everything before any data is read or model built
    if a.leave_group():
        return 0  # a torchrun rank other than 0: rank 0 writes every output
    result.command = [a.PROG, *argv]
    outputs.write(result, outputs.OutputSpec(json=args.json, records=args.records, html=args.html, junit=args.junit,
                                             history=not args.no_history, gates=gate_list, baseline=baseline,
                                             baseline_label=baseline_label, gate_mode=gate_mode))
    return 0

