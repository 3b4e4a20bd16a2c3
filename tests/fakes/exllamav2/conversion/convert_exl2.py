"""Fake of ``exllamav2/conversion/convert_exl2.py`` (0.3.2), run as ``python -m``.

Like the real script it parses its arguments at import (same flags and defaults) and, on a bad
argument, prints its own error and exits with status 0. It "converts" by copying ``config.json`` and
the tokenizer files of ``-i`` into ``-cf``, adding the ``quantization_config`` the real compiler
writes (``quant_method: exl2``, ``bits``, ``head_bits``, ``calibration``), and writing one small
``output.safetensors``; the working directory ``-o`` gets its ``job_new.json``. Each run appends its
argv to ``$FAKE_EXL_CLI_LOG`` (JSON lines) when that is set.
"""

import argparse
import json
import os
import shutil
import sys

parser = argparse.ArgumentParser(description="Convert model to ExLlamaV2")
parser.add_argument("-i", "--in_dir", type=str, help="Input directory", default="")
parser.add_argument("-o", "--out_dir", type=str, help="Output (working) directory")
parser.add_argument("-res", "--resume", action="store_true")
parser.add_argument("-nr", "--no_resume", action="store_true")
parser.add_argument("-cf", "--compile_full", type=str)
parser.add_argument("-c", "--cal_dataset", type=str)
parser.add_argument("-b", "--bits", type=float, default=4.125)
parser.add_argument("-ss", "--shard_size", type=float, default=8192)
parser.add_argument("-hb", "--head_bits", type=int, default=6)
parser.add_argument("-r", "--dataset_rows", type=int, default=100)
parser.add_argument("-mr", "--measurement_rows", type=int, default=16)
parser.add_argument("-l", "--length", type=int, default=2048)
parser.add_argument("-ml", "--measurement_length", type=int, default=2048)
args = parser.parse_args()

if os.environ.get("FAKE_EXL_CLI_LOG"):
    with open(os.environ["FAKE_EXL_CLI_LOG"], "a") as log:
        log.write(json.dumps(["convert_exl2", *sys.argv[1:]]) + "\n")

if not args.out_dir:
    print(" ## Please specify output/working directory (-o, --out_dir)")
    sys.exit()
if not args.in_dir:
    print(" ## Please specify input model directory (-i, --in_dir)")
    sys.exit()
if args.head_bits not in (2, 3, 4, 5, 6, 8):
    print(f" ## Error: {args.head_bits} is not a supported option for head layer bitrate")
    sys.exit()

os.makedirs(args.out_dir, exist_ok=True)
with open(os.path.join(args.out_dir, "job_new.json"), "w") as f:
    json.dump({"bits": args.bits, "head_bits": args.head_bits}, f)

if args.compile_full is not None:
    import numpy
    from safetensors.numpy import save_file

    os.makedirs(args.compile_full, exist_ok=True)
    for name in os.listdir(args.in_dir):
        if not name.endswith(".safetensors") and os.path.isfile(os.path.join(args.in_dir, name)):
            shutil.copyfile(os.path.join(args.in_dir, name), os.path.join(args.compile_full, name))
    config_json = os.path.join(args.compile_full, "config.json")
    with open(config_json) as f:
        config_dict = json.load(f)
    config_dict["quantization_config"] = {
        "quant_method": "exl2", "version": "0.3.2", "bits": args.bits, "head_bits": args.head_bits,
        "calibration": {"rows": args.dataset_rows, "length": args.length,
                        "dataset": os.path.split(args.cal_dataset)[1] if args.cal_dataset else "(default)"},
    }
    with open(config_json, "w") as f:
        f.write(json.dumps(config_dict, indent=4))
    save_file({"model.layers.0.self_attn.q_proj.q_weight": numpy.zeros(4, dtype=numpy.int32)},
              os.path.join(args.compile_full, "output.safetensors"))
    print(" -- Finished")
