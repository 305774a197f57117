#!/usr/bin/env python3
"""Synthetic market candles as JSON lines, one per line on stdout.

    python3 candles.py --count 1000 | cronsumer produce candles -

Standard library only, so it runs without the model server's venv. server.py
trains on this same generator, so the model has seen data like what you pipe in.
"""
import argparse
import json
import math
import os
import random
import sys
import time

# Returns follow a weak AR(1) process: a candle's return carries a little into the
# next one. A pure random walk would be unpredictable, leaving the model nothing
# to learn; with 0.3 the best possible accuracy is about 60%, like a real signal.
MOMENTUM = 0.3
VOLATILITY = 0.002  # per-candle log-return standard deviation (about 0.2%)


def generate(symbol="BTCUSDT", count=1000, start_ms=0, interval_ms=60_000, seed=1, price=30_000.0):
    """Yield `count` candle dicts; the same seed always gives the same prices."""
    rng = random.Random(seed)
    ret = 0.0
    for i in range(count):
        ret = MOMENTUM * ret + rng.gauss(0.0, VOLATILITY)
        open_ = price
        close = round(open_ * math.exp(ret), 2)
        # Wicks stick out beyond the body; rounding must not put them inside it.
        high = max(round(max(open_, close) * math.exp(abs(rng.gauss(0.0, VOLATILITY / 2))), 2), open_, close)
        low = min(round(min(open_, close) * math.exp(-abs(rng.gauss(0.0, VOLATILITY / 2))), 2), open_, close)
        # Busy candles (large moves) trade more, as in real markets.
        volume = round(rng.lognormvariate(3.0, 0.5) * (1.0 + abs(ret) / VOLATILITY), 4)
        yield {"symbol": symbol, "open_time": start_ms + i * interval_ms,
               "open": open_, "high": high, "low": low, "close": close, "volume": volume}
        price = close  # the next candle opens where this one closed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--count", type=int, default=1000, help="candles to print (default 1000)")
    parser.add_argument("--interval-ms", type=int, default=60_000, help="candle length (default 60000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--start-ms", type=int, default=None,
                        help="first open_time (default: so the last candle is the current one)")
    parser.add_argument("--price", type=float, default=30_000.0, help="first open (default 30000)")
    args = parser.parse_args()
    start = args.start_ms
    if start is None:
        now = int(time.time() * 1000) // args.interval_ms * args.interval_ms
        start = now - (args.count - 1) * args.interval_ms
    try:
        for candle in generate(args.symbol, args.count, start, args.interval_ms, args.seed, args.price):
            sys.stdout.write(json.dumps(candle, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    main()
