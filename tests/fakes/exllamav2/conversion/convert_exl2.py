"""Fake of ``exllamav2/conversion/convert_exl2.py`` (0.3.2), run as ``python -m``.

Like the real script it parses its arguments at import (same flags and defaults) and, on a bad
argument, prints its own error and exits with status 0. It "converts" by copying ``config.json`` and
the tokenizer files of ``-i`` into ``-cf``, adding the ``quantization_config`` the real compiler
writes (``quant_method: exl2``, ``bits``, ``head_bits``, ``calibration``), and writing one small
``output.safetensors``; the working directory ``-o`` gets its ``job_new.json``, and a working directory
that holds one is resumed with its saved settings. The measurement pass writes ``measurement.json``
(``{"measurement": {...}, "last_module_idx": N}``) into ``-o``, as the real ``measure_quant`` does;
``-m FILE`` reuses one instead ("Reusing measurement"), and its per-layer entries go into the job. ``$FAKE_EXL_STOP`` stops it after the job file is
written (exit 124, as ``timeout`` would). Each run appends its argv to ``$FAKE_EXL_CLI_LOG`` (JSON
lines) when that is set.
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
parser.add_argument("-om", "--output_measurement", type=str)
parser.add_argument("-m", "--measurement", type=str)
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

# A job is resumed when the working directory holds job_new.json (and -nr is not given): the saved
# settings win over the command line's, -cf included, as in the real script.
os.makedirs(args.out_dir, exist_ok=True)
job_file = os.path.join(args.out_dir, "job_new.json")
job = {"bits": args.bits, "head_bits": args.head_bits, "compile_full": args.compile_full,
       "dataset_rows": args.dataset_rows, "length": args.length, "cal_dataset": args.cal_dataset, "progress": "begin"}
if args.measurement is not None:
    with open(args.measurement, encoding="utf8") as f:
        imported = json.load(f)
    job["measurement"] = imported["measurement"]
    job["last_module_idx"] = imported["last_module_idx"]
    job["reuse_measurement"] = args.measurement
if os.path.exists(job_file) and not args.no_resume:
    print(" -- Resuming job")
    with open(job_file) as f:
        job.update(json.load(f))
    if job["progress"] == "finished":
        print(" !! Job is already finished. Clear the working directory, or run this script with -nr/--no_resume")
        sys.exit()
else:
    print(" -- Beginning new job")
with open(job_file, "w") as f:
    json.dump(job, f)
if os.environ.get("FAKE_EXL_STOP"):  # stopped mid-measurement (a time limit): the job file stays
    print(" -- Measuring layer 14 of 32")
    sys.exit(124)
if "reuse_measurement" in job:
    print(f" -- Reusing measurement: {job['reuse_measurement']}")
elif "measurement" not in job:
    print(" -- Measuring quantization impact...")
    job["measurement"] = {"model.layers.0.self_attn": [{"accuracy": 0.99, "total_bits": 4096}],
                          "model.layers.0.mlp": [{"accuracy": 0.98, "total_bits": 8192}]}
    job["last_module_idx"] = 2
    with open(os.path.join(args.out_dir, "measurement.json"), "w", encoding="utf8") as f:
        f.write(json.dumps({"measurement": job["measurement"], "last_module_idx": job["last_module_idx"]}, indent=4))

if job["compile_full"] is not None:
    import numpy
    from safetensors.numpy import save_file

    compile_full = job["compile_full"]
    os.makedirs(compile_full, exist_ok=True)
    for name in os.listdir(args.in_dir):
        if not name.endswith(".safetensors") and os.path.isfile(os.path.join(args.in_dir, name)):
            shutil.copyfile(os.path.join(args.in_dir, name), os.path.join(compile_full, name))
    config_json = os.path.join(compile_full, "config.json")
    with open(config_json) as f:
        config_dict = json.load(f)
    config_dict["quantization_config"] = {
        "quant_method": "exl2", "version": "0.3.2", "bits": job["bits"], "head_bits": job["head_bits"],
        "calibration": {"rows": job["dataset_rows"], "length": job["length"],
                        "dataset": os.path.split(job["cal_dataset"])[1] if job["cal_dataset"] else "(default)"},
    }
    with open(config_json, "w") as f:
        f.write(json.dumps(config_dict, indent=4))
    save_file({"model.layers.0.self_attn.q_proj.q_weight": numpy.zeros(4, dtype=numpy.int32)},
              os.path.join(compile_full, "output.safetensors"))
    job["progress"] = "finished"
    with open(job_file, "w") as f:
        json.dump(job, f)
    print(" -- Finished")
