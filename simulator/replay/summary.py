"""The replay's results in plain language: which policy is estimated best, by
how much against the logging policy, how sure that is, what to do next, and
the warnings. The terminal, the JSON (``results["summary"]``) and the HTML
report open with it."""

from __future__ import annotations

from typing import Any

# The estimate a summary quotes per policy: the first of these it has at page scope.
HEADLINE = ("snips", "ips", "dr", "sndr", "switch-dr", "dr-os", "dm")


def headline(policy: dict[str, Any]) -> dict[str, Any] | None:
    """The policy's page estimate the summary quotes (with an interval when it has one)."""
    page = {e["estimator"]: e for e in policy["estimates"] if e["scope"] == "page" and "value" in e}
    for name in HEADLINE:
        if name in page:
            return page[name]
    return next(iter(page.values()), None)


def interval(entry: dict[str, Any]) -> tuple[float, float] | None:
    ivs = entry.get("intervals") or {}
    for method in ("normal", *ivs):
        iv = ivs.get(method) or {}
        if "lower" in iv:
            return float(iv["lower"]), float(iv["upper"])
    return None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """``{"best", "estimator", "value", "interval", "reference", "lift", "sure", "next",
    "sentences", "warnings"}``; ``sentences`` is the summary as prose."""
    level = results["config"]["level"]
    reference = float(results["log"]["mean_page_reward"])
    rows = [(p, headline(p)) for p in results["policies"]]
    rows = [(p, e) for p, e in rows if e is not None]
    warnings = [{"policy": p["name"], **w} for p in results["policies"] for w in p.get("warnings", [])]
    if not rows:
        return {"best": None, "sentences": ["No policy could be valued: every estimate was refused."],
                "warnings": warnings, "next": "see the refusals below", "reference": reference}
    rows.sort(key=lambda pe: -pe[1]["value"])
    best, est = rows[0]
    ci = interval(est)
    lift = (est["value"] - reference) / abs(reference) if reference else None
    by = f"{est['value'] - reference:+.4g}" + (f" ({lift:+.0%})" if lift is not None else "")
    sentences = [f"Estimated best: {best['name']} with a page value of {est['value']:.4g} "
                 f"({est['estimator'].upper()}), {by} against the logging policy's {reference:.4g} "
                 "(the log's own mean)."]
    if ci is None:
        sure = "unknown"
        sentences.append("Its estimate has no interval, so how sure this is cannot be said.")
    elif ci[0] > reference:
        sure = "above_logging"
        sentences.append(f"The {level:.0%} interval [{ci[0]:.4g}, {ci[1]:.4g}] lies above the logging policy's "
                         "value: it is likely better.")
    elif ci[1] < reference:
        sure = "below_logging"
        sentences.append(f"Its {level:.0%} interval [{ci[0]:.4g}, {ci[1]:.4g}] lies below the logging "
                         "policy's value: no candidate is likely to beat what is running.")
    else:
        sure = "not_distinguishable"
        sentences.append(f"Its {level:.0%} interval [{ci[0]:.4g}, {ci[1]:.4g}] includes the logging policy's "
                         "value: the log cannot tell them apart.")
    if len(rows) > 1:
        second, est2 = rows[1]
        ci2 = interval(est2)
        if ci and ci2 and ci2[1] >= ci[0]:
            sentences.append(f"The runner-up {second['name']} ({est2['value']:.4g}) is within its interval.")
    own = [w for w in warnings if w["policy"] == best["name"]]
    if own:
        sentences.append(f"{len(own)} warning(s) about it: " + "; ".join(sorted({w['kind'] for w in own})) + ".")
    return {"best": best["name"], "estimator": est["estimator"], "value": est["value"], "interval": ci,
            "reference": reference, "lift": lift, "sure": sure, "next": _next(best, sure, own),
            "sentences": sentences, "warnings": warnings}


def _next(best: dict[str, Any], sure: str, own: list[dict[str, Any]]) -> str:
    if best["kind"] == "logged" or sure == "below_logging":
        return "Keep the current policy; try other candidates or collect more varied (explored) traffic."
    if own:
        return (f"Do not act on {best['name']} yet: resolve the warnings (more logged traffic, more exploration, "
                "or a target closer to the logging policy), then re-run.")
    if sure == "above_logging":
        return f"Confirm {best['name']} with an online A/B test against the current policy before rolling it out."
    return "Collect more logged traffic (or more exploration) before choosing; the difference is within the noise."
