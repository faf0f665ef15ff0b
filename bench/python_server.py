"""A plain Python ONNX Runtime HTTP server: the baseline for bench/worker.sh.

What a team would write first: aiohttp, one onnxruntime InferenceSession,
one request scored at a time with the reference feature code
(models/url_features.py), no batching. Same API as `gantry worker` for
POST /v1/analyze, plus GET /health.

    python bench/python_server.py --model models/phishing-url --port 9101
"""

import argparse
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from aiohttp import web

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "models"))
import url_features  # noqa: E402  (the reference feature extractor)


def build_app(model_dir, onnx_file, threads):
    with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as fh:
        spec = json.load(fh)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(
        os.path.join(model_dir, onnx_file), so, providers=["CPUExecutionProvider"]
    )
    in_name = spec["input"]["name"]
    out_name = spec["output"]["name"]
    threshold = float(spec["threshold"])
    model_id = f'{spec["name"]}@{spec["version"]}'

    async def analyze(request):
        try:
            body = await request.json()
            url = body["url"]
            if not isinstance(url, str):
                raise ValueError("url must be a string")
        except Exception as e:  # malformed JSON, missing field, wrong type
            return web.json_response({"error": str(e)}, status=400)
        x = url_features.extract(url)[None, :]
        score = float(session.run([out_name], {in_name: x})[0].reshape(-1)[0])
        verdict = "phishing" if score >= threshold else "legitimate"
        return web.json_response({"verdict": verdict, "score": score, "model": model_id})

    async def health(_request):
        return web.Response(text="ok\n")

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/v1/analyze", analyze)
    app.router.add_get("/health", health)
    return app


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "phishing-url"))
    ap.add_argument("--onnx", default="model.onnx")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9101)
    ap.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads")
    args = ap.parse_args()
    app = build_app(args.model, args.onnx, args.threads)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
