"""Fake of ``exllamav3/conversion/convert_model.py`` (1.6.5), run as ``python -m``.

Same flags and defaults for what llmcompare passes; like the real script, ``prepare`` returns an
error that ``__main__`` prints, and the process exits with status 0. "Converting" copies
``config.json`` and the tokenizer files of ``-i`` into ``-o``, writes the ``quantization_config`` the
real compiler writes (``quant_method: exl3``, ``bits``, ``head_bits``, ``calibration``, ``codebook``),
one small ``model.safetensors`` and ``quantization_config.json``; ``-w`` gets ``args.json``, which ``-r``
resumes. ``$FAKE_EXL_STOP`` stops it after ``args.json`` is written (exit 124, as ``timeout`` would).
Each run appends its argv to ``$FAKE_EXL_CLI_LOG`` (JSON lines) when that is set.
"""

import argparse
import json
import os
import shutil
import sys

parser = argparse.ArgumentParser(allow_abbrev=False)
parser.add_argument("-i", "--in_dir", type=str, default=None)
parser.add_argument("-w", "--work_dir", type=str, default=None)
parser.add_argument("-o", "--out_dir", type=str, default=None)
parser.add_argument("-ss", "--shard_size", type=int)
parser.add_argument("-b", "--bits", type=float)
parser.add_argument("-hb", "--head_bits", type=float, default=None)
parser.add_argument("-r", "--resume", action="store_true")
parser.add_argument("-cr", "--cal_rows", type=int)
parser.add_argument("-cc", "--cal_cols", type=int)
parser.add_argument("-d", "--devices", type=str, default="0")
parser.add_argument("-cb", "--codebook", type=str, default="mul1")


def prepare(args):
    if not args.work_dir:
        return None, None, False, "Must specify --work_dir"
    if not args.in_dir and not args.resume:
        return None, None, False, "Specify either --in_dir to start a new job or --resume to resume an interrupted job"
    if not args.out_dir and not args.resume:
        return None, None, False, "Must specify --out_dir or --resume"
    if args.bits is not None and (args.bits > 8 or args.bits < 1):
        return None, None, False, "--bits must be between 1 and 8"
    if not args.resume and args.bits is None:
        return None, None, False, "Specify either --bits or --recipe"
    in_args = {"work_dir": args.work_dir}
    if args.resume:  # the saved job's settings, then what the command line sets (out_dir may change)
        with open(os.path.join(args.work_dir, "args.json")) as f:
            in_args = {**json.load(f), "work_dir": args.work_dir}
        print(" -- Resuming job")
    given = {"in_dir": args.in_dir, "out_dir": args.out_dir, "bits": args.bits,
             "head_bits": int(args.head_bits) if args.head_bits else None, "cal_rows": args.cal_rows,
             "cal_cols": args.cal_cols}
    in_args.update({k: v for k, v in given.items() if v is not None})
    in_args = {"head_bits": 6, "cal_rows": 250, "cal_cols": 2048, "codebook": args.codebook, **in_args}
    os.makedirs(args.work_dir, exist_ok=True)
    with open(os.path.join(args.work_dir, "args.json"), "w") as f:
        json.dump(in_args, f)
    if os.environ.get("FAKE_EXL_STOP"):  # stopped after a checkpoint (a time limit): args.json stays
        print(" -- Quantized: model.layers.13")
        sys.exit(124)
    return in_args, {}, True, None


def main(args, job_state):
    import numpy
    from safetensors.numpy import save_file

    os.makedirs(args["out_dir"], exist_ok=True)
    for name in os.listdir(args["in_dir"]):
        if not name.endswith(".safetensors") and os.path.isfile(os.path.join(args["in_dir"], name)):
            shutil.copyfile(os.path.join(args["in_dir"], name), os.path.join(args["out_dir"], name))
    with open(os.path.join(args["in_dir"], "config.json")) as f:
        config_dict = json.load(f)
    qcfg = {"quant_method": "exl3", "version": "1.6.5", "bits": args["bits"], "head_bits": args["head_bits"],
            "calibration": {"rows": args["cal_rows"], "cols": args["cal_cols"]}, "codebook": args["codebook"]}
    config_dict["quantization_config"] = qcfg
    with open(os.path.join(args["out_dir"], "config.json"), "w") as f:
        f.write(json.dumps(config_dict, indent=4))
    with open(os.path.join(args["out_dir"], "quantization_config.json"), "w") as f:
        f.write(json.dumps(qcfg, indent=4))
    save_file({"model.layers.0.self_attn.q_proj.trellis": numpy.zeros(4, dtype=numpy.int16)},
              os.path.join(args["out_dir"], "model.safetensors"))
    print(" -- All done")


if __name__ == "__main__":
    if os.environ.get("FAKE_EXL_CLI_LOG"):
        with open(os.environ["FAKE_EXL_CLI_LOG"], "a") as log:
            log.write(json.dumps(["convert_model", *sys.argv[1:]]) + "\n")
    _args = parser.parse_args()
    _in_args, _job_state, _ok, _err = prepare(_args)
    if not _ok:
        print(f" !! Error: {_err}")
    else:
        main(_in_args, _job_state)
