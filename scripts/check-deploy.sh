#!/usr/bin/env bash
# Checks the deployment kit (issue 13): the Prometheus alerting rules and their
# unit tests, the Grafana dashboard, and .env.example. Installs promtool
# (Debian's prometheus package, through scripts/services.sh tools) when missing.
# Usage: scripts/check-deploy.sh   (from any directory)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ALERTS=deploy/prometheus/alerts.yml
ALERTS_TEST=deploy/prometheus/alerts_test.yml
DASHBOARD=deploy/grafana/cronsumer.json

command -v promtool >/dev/null 2>&1 || scripts/services.sh tools
command -v promtool >/dev/null 2>&1 || { echo "FAIL promtool missing (scripts/services.sh tools)"; exit 1; }

if out=$(promtool check rules "$ALERTS" 2>&1); then
  echo "ok   promtool check rules $ALERTS ($(grep -o '[0-9]* rules found' <<<"$out"))"
else
  echo "FAIL promtool check rules $ALERTS"; echo "$out"; exit 1
fi

if out=$(promtool test rules "$ALERTS_TEST" 2>&1); then
  echo "ok   promtool test rules $ALERTS_TEST"
else
  echo "FAIL promtool test rules $ALERTS_TEST"; echo "$out"; exit 1
fi

if python3 -m json.tool "$DASHBOARD" >/dev/null; then
  echo "ok   $DASHBOARD is valid JSON"
else
  echo "FAIL $DASHBOARD is not valid JSON"; exit 1
fi

# Every metric a PromQL expression of the dashboard or the alerts names must be
# cronsumer_* or up.
python3 - "$ALERTS" "$DASHBOARD" <<'PY'
import json, re, sys

alerts_path, dashboard_path = sys.argv[1], sys.argv[2]

def alert_exprs(path):
    """The `expr:` values of a rules file, without needing PyYAML."""
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:
        with open(path) as f:
            doc = yaml.safe_load(f)
        return [str(r["expr"]) for g in doc.get("groups", []) for r in g.get("rules", []) if "expr" in r]
    exprs, lines, i = [], open(path).read().splitlines(), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2).strip()
        if rest[:1] in ("|", ">"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i]); i += 1
            exprs.append("\n".join(block))
        else:
            exprs.append(rest.strip("'\""))
    return exprs

def dashboard_exprs(path):
    out = []
    def walk(o):
        if isinstance(o, dict):
            for k, v in o.items():
                if k in ("expr", "definition") and isinstance(v, str):
                    out.append(v)
                elif k == "query" and isinstance(v, str) and o.get("type") == "query":
                    out.append(v)
                else:
                    walk(v)
        elif isinstance(o, list):
            for v in o:
                walk(v)
    with open(path) as f:
        walk(json.load(f))
    return out

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "offset", "bool", "inf", "nan", "atan2", "start", "end"}

def metric_names(expr):
    e = re.sub(r"#.*", "", expr)                                   # comments
    e = re.sub(r"\$\{[^}]*\}|\$\w+", "0", e)                        # Grafana variables
    e = re.sub(r"label_values\s*\(\s*([^,()]*?)\s*,[^()]*\)", r"(\1)", e)  # Grafana label_values(metric, label)
    e = re.sub(r"label_values\s*\(\s*(\w+)\s*\)", "", e)           # label_values(label)
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', e)  # strings
    e = re.sub(r"\{[^}]*\}", "", e)                                # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)                               # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", e)
    e = re.sub(r"(?<![\w.])\d[\w.]*", "0", e)                      # numbers, durations
    names = set()
    for m in re.finditer(r"[A-Za-z_:][\w:]*", e):
        word, after = m.group(0), e[m.end():].lstrip()
        if after.startswith("(") or word.lower() in KEYWORDS:
            continue                                               # a function or keyword
        names.add(word)
    return names

bad, seen = [], set()
for source, exprs in ((alerts_path, alert_exprs(alerts_path)), (dashboard_path, dashboard_exprs(dashboard_path))):
    if not exprs:
        print(f"FAIL no PromQL expressions found in {source}")
        sys.exit(1)
    for expr in exprs:
        for name in metric_names(expr):
            seen.add(name)
            if not (name.startswith("cronsumer_") or name == "up"):
                bad.append(f"{source}: {name} in {expr.strip()!r}")
if bad:
    print("FAIL metric names not cronsumer_* or up:")
    for b in bad:
        print("     " + b)
    sys.exit(1)
print(f"ok   metric names in {alerts_path} and {dashboard_path} are cronsumer_* or up ({len(seen)} distinct)")
PY

# docker run --env-file keeps quotes literally: values in .env.example are never quoted.
if quoted=$(grep -nE "^[A-Z_]+=['\"]" .env.example); then
  echo "FAIL .env.example has quoted values (docker run --env-file keeps the quotes):"
  echo "$quoted"
  exit 1
fi
echo "ok   .env.example has no quoted values"
