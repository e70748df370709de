"""Reading `ortq train` runs for the GPU scripts' Python summaries (imported from their
heredocs: sys.path gets this folder). Python 3 standard library only."""
import json, os


def load_run(d):
    """The report.json of the run in folder d with "losses": the loss of each optimizer step
    from run.jsonl (--log-every 1: one line per step), in step order; None without a report."""
    if not os.path.exists(os.path.join(d, "report.json")):
        return None
    r = json.load(open(os.path.join(d, "report.json")))
    steps = {}
    for line in open(os.path.join(d, "run.jsonl")):
        e = json.loads(line)
        if e.get("loss") is not None and e.get("step"):
            steps[e["step"]] = e["loss"]
    r["losses"] = [steps[k] for k in sorted(steps)]
    return r
