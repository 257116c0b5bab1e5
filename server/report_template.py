# ruff: noqa: E501, RUF001  (an HTML template: its lines and typography are the page's)
"""The jinja2 template of ``report.html`` (one self-contained page: no external assets).

Kept as a Python string because a Flower app bundle (FAB) carries only ``.py``, ``.toml``,
``.md``, ``.json`` and ``.yaml`` files: a separate ``.j2`` file would be missing wherever the
ServerApp runs from a FAB (``flwr run``, deployments), and the run would end without its report.
"""

REPORT_TEMPLATE = r"""<!doctype html>
{# The medfed run report. Self-contained: inline CSS and SVG only, nothing fetched. #}
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
  :root { --ink: #1b1f24; --muted: #5b6470; --line: #d5dae0; --band: #f4f6f8; --flag: #b42318; }
  * { box-sizing: border-box; }
  body { margin: 0; color: var(--ink); background: #fff;
         font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
  main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 60px; }
  header h1 { font-size: 26px; margin: 0 0 4px; }
  .sub { color: var(--muted); margin: 0 0 12px; }
  nav { position: sticky; top: 0; background: #fff; border-bottom: 1px solid var(--line);
        padding: 8px 0; margin-bottom: 8px; z-index: 2; font-size: 14px; }
  nav a { color: #1f5fa8; text-decoration: none; margin-right: 16px; white-space: nowrap; }
  h2 { font-size: 20px; margin: 34px 0 8px; padding-top: 8px; border-top: 2px solid var(--ink); }
  h3 { font-size: 16px; margin: 18px 0 6px; }
  p.note, .note { color: var(--muted); font-size: 13.5px; max-width: 70em; }
  .cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
  .card { border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 130px;
          background: var(--band); }
  .card b { display: block; font-size: 22px; font-variant-numeric: tabular-nums; }
  .card span { color: var(--muted); font-size: 13px; }
  table { border-collapse: collapse; font-size: 13.5px; font-variant-numeric: tabular-nums;
          margin: 6px 0 10px; }
  th, td { border: 1px solid var(--line); padding: 3px 9px; text-align: right; vertical-align: top; }
  th { background: var(--band); font-weight: 600; }
  td.text, th.text { text-align: left; }
  .scroll { overflow-x: auto; max-width: 100%; }
  .grid2 { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px 28px;
           align-items: start; }
  .grid4 { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 8px 18px;
           align-items: start; }
  .settings table { width: 100%; }
  .settings td:first-child { text-align: left; color: var(--muted); }
  .settings td:last-child { word-break: break-all; }
  figure { margin: 6px 0; }
  figure svg { max-width: 100%; height: auto; }
  .grid2 figure svg { width: 100%; }
  caption { text-align: left; font-weight: 600; padding: 2px 0; }
  .nowrap { white-space: nowrap; }
  p.flag { font-size: 14px; }
  figcaption { color: var(--muted); font-size: 13px; }
  .missing { color: var(--muted); font-style: italic; }
  .flag { color: var(--flag); font-weight: 600; }
  tr.flagged td { background: #fdecea; }
  table.confusion td.cell { font-size: 17px; min-width: 90px; text-align: center; }
  table.confusion td.hit { background: #e3f1e6; }
  table.confusion td.miss { background: #fbe9e7; }
  .kind-declined { color: #8a5a00; } .kind-failed { color: var(--flag); }
  .kind-rejected { color: #7a1fa2; }
  .kind-stopped { color: var(--flag); } .kind-not-evaluated { color: #8a5a00; }
  @media (max-width: 900px) { .grid2, .grid4 { grid-template-columns: 1fr; } }
</style>
</head>
<body>
{% macro missing(text) -%}
<p class="missing">{% if no_site_tests %}The sites hold no test split of their own: nothing pooled to show.{% else %}{{ text }}{% endif %}</p>
{%- endmacro %}
<main>
<header>
  <h1>{{ title }}</h1>
  <p class="sub">
    {% if created %}started {{ created }} · {% endif %}
    {{ rounds | length }} of {{ num_rounds_planned | number }} rounds completed · {{ sites | length }} sites
    {% for name, version in versions.items() %} · {{ name }} {{ version }}{% endfor %}
  </p>
</header>
<nav>
  <a href="#overview">Overview</a><a href="#settings">Settings &amp; data</a><a href="#metrics">Metrics by round</a>
  <a href="#roc">ROC</a><a href="#confusion">Confusion matrix</a><a href="#calibration">Calibration</a>
  <a href="#privacy">Privacy</a><a href="#fairness">Fairness</a><a href="#participation">Rounds</a>
</nav>

<section id="overview">
{% if stopped %}
  <p class="flag">Run stopped before round {{ stopped.after_round + 1 }}: {{ stopped.detail }}. It can be resumed from
    its last checkpoint (<code>run.resume=true</code> with this run directory) once the sites can take part again.</p>
{% endif %}
{% if final %}
  {% if no_site_tests %}
  <h2>Final round {{ final.round }}</h2>
  <p class="note">The sites hold no test split of their own (<code>data.test-fraction</code> = 0 and no test
    folder), so there are no pooled site figures{% if official %}: the data set's official split below is the
    run's test{% endif %}.</p>
  {% if final.epsilon_max is not none %}<div class="cards">
    <div class="card"><b>{{ final.epsilon_max | epsilon }}</b><span>max ε (δ = {{ privacy.delta }})</span></div>
  </div>{% endif %}
  {% else %}
  <h2>Final round {{ final.round }}: pooled test metrics{% if official %} of the sites' own test splits{% endif %}</h2>
  <div class="cards">
    <div class="card"><b>{{ final.auc | rate }}</b><span>ROC-AUC</span></div>
    <div class="card"><b>{{ final.sensitivity | rate }}</b><span>sensitivity</span></div>
    <div class="card"><b>{{ final.specificity | rate }}</b><span>specificity</span></div>
    <div class="card"><b>{{ final.f1 | rate }}</b><span>F1</span></div>
    <div class="card"><b>{{ final.balanced_accuracy | rate }}</b><span>balanced accuracy</span></div>
    <div class="card"><b>{% if threshold is not none %}{{ threshold | rate }}{% else %}{{ "arg-max" if final.threshold_rule else "0.5" }}{% endif %}</b>
      <span>threshold{% if threshold_rule %} ({{ threshold_rule }}){% elif threshold is none %} (default; none recorded){% endif %}</span></div>
    <div class="card"><b>{{ final.epsilon_max | epsilon }}</b><span>max ε (δ = {{ privacy.delta }})</span></div>
  </div>
  {% endif %}
  {% if official %}
  <h3 id="official">The data set's official test split, scored on the server</h3>
  <div class="scroll"><table>
    <tr><th class="text">model</th><th>official val AUC</th><th>test ROC-AUC</th><th>balanced accuracy</th>
      <th>sensitivity</th><th>specificity</th><th>threshold (from val)</th><th>test images</th></tr>
    {% for label, row in official %}
    <tr><td class="text">{{ label }}</td><td>{{ row.val_auc | rate }}</td><td>{{ row.auc | rate }}</td>
      <td>{{ row.balanced_accuracy | rate }}</td><td>{{ row.sensitivity | rate }}</td><td>{{ row.specificity | rate }}</td>
      <td>{% if row.threshold is not none %}{{ row.threshold | rate }}{% else %}arg-max{% endif %}</td><td>{{ row.n_test | count }}</td></tr>
    {% endfor %}
  </table></div>
  <p class="note">Public images the server holds (never a site's): the figures comparable with published results
    on this data set. The round chosen on official val is how the benchmark tables pick a run's figure.</p>
  {% endif %}
{% else %}
  <h2>Overview</h2>
  <p class="missing">No round completed: there is nothing to report yet.</p>
{% endif %}
</section>

<section id="settings">
  <h2>Settings and data</h2>
  <h3>Data per site</h3>
  {% if site_rows %}
  <div class="scroll"><table>
    <tr><th class="text">site</th><th>test images</th><th>positives</th><th>negatives</th>
      <th>rounds trained</th><th>declined</th><th>failed</th><th>rejected</th><th>ε spent</th></tr>
    {% for row in site_rows %}
    <tr><td class="text">{{ row.site }}</td><td>{{ row.test_images | count }}</td>
      <td>{{ row.positives | count }}</td><td>{{ row.negatives | count }}</td>
      <td>{{ row.trained }}</td><td>{{ row.declined }}</td><td>{{ row.failed }}</td>
      <td>{{ row.rejected }}</td><td>{{ row.epsilon | epsilon }}</td></tr>
    {% endfor %}
  </table></div>
  <p class="note">Test images, positives and negatives: the site's test split at its latest evaluation
    (only counts leave a site). Positives are the class “{{ (config.get("data.class-names") or "class 1").split(",")[-1] }}”.</p>
  {% else %}
  <p class="missing">No site has reported yet.</p>
  {% endif %}
  <h3>Run settings</h3>
  <div class="grid4 settings">
  {% for section, items in settings.items() %}
    <table><tr><th colspan="2" class="text">{{ section }}</th></tr>
    {% for name, value in items %}<tr><td>{{ name }}</td><td>{{ value }}</td></tr>{% endfor %}
    </table>
  {% endfor %}
  </div>
</section>

<section id="metrics">
  <h2>Pooled and per-site metrics by round</h2>
  {% if metric_plot %}
  <figure>{{ metric_plot | safe }}
    <figcaption>Pooled over sites ({{ 'black' if sites | length > 10 else 'wide grey line' }}) and per site{{ ' (grey: too many sites to name; see the tables)' if sites | length > 10 else '' }}, on each site's test split{% if threshold is not none %}, at the operating threshold chosen on pooled validation data{% endif %}.</figcaption></figure>
  <h3>Pooled, by round</h3>
  <div class="scroll"><table>
    <tr><th>round</th><th>train loss</th><th>test loss</th><th>AUC</th><th>sensitivity</th><th>specificity</th>
      <th>precision</th><th>F1</th><th>balanced acc.</th><th>threshold</th><th>max ε</th>
      <th class="text">trained</th><th>elapsed</th></tr>
    {% for r in rounds %}
    <tr><td>{{ r.round }}</td><td>{{ r.train_loss | number }}</td><td>{{ r.loss | number }}</td>
      <td>{{ r.auc | rate }}</td><td>{{ r.sensitivity | rate }}</td><td>{{ r.specificity | rate }}</td>
      <td>{{ r.precision | rate }}</td><td>{{ r.f1 | rate }}</td><td>{{ r.balanced_accuracy | rate }}</td>
      <td>{{ r.threshold | rate }}</td><td>{{ r.epsilon_max | epsilon }}</td>
      <td class="text">{{ (r.train_sites or []) | length }} sites</td>
      <td>{% if r.elapsed_s is not none %}{{ r.elapsed_s | round(1) }} s{% else %}–{% endif %}</td></tr>
    {% endfor %}
  </table></div>
  <h3>Per site, by round</h3>
  <div class="{{ 'grid2' if rounds | length <= 6 else '' }}">
  {% for table in round_tables %}
    <div class="scroll"><table>
      <caption>{{ table.metric }}</caption>
      <tr><th class="text">round</th>{% for number in table.rounds %}<th>{{ number }}</th>{% endfor %}</tr>
      {% for label, values in table.rows %}
      <tr><td class="text">{% if loop.first %}<b>{{ label }}</b>{% else %}{{ label }}{% endif %}</td>{% for v in values %}<td>{{ v | rate }}</td>{% endfor %}</tr>
      {% endfor %}
    </table></div>
  {% endfor %}
  </div>
  <h3>Per site, final round</h3>
  {% if no_site_tests %}{{ missing("") }}{% else %}
  <div class="scroll"><table>
    <tr><th class="text">site</th><th>test images</th>{% for c in site_columns %}<th>{{ c | replace("_", " ") }}</th>{% endfor %}
      <th>TN</th><th>FP</th><th>FN</th><th>TP</th></tr>
    {% for site, values in final_sites.items() %}
    {% set m = values.confusion if values.confusion and values.confusion | length == 2 else none %}
    <tr><td class="text">{{ site }}</td><td>{{ values.num_examples | count }}</td>
      {% for c in site_columns %}<td>{{ values[c] | rate }}</td>{% endfor %}
      {% if m %}<td>{{ m[0][0] }}</td><td>{{ m[0][1] }}</td><td>{{ m[1][0] }}</td><td>{{ m[1][1] }}</td>
      {% else %}<td>–</td><td>–</td><td>–</td><td>–</td>{% endif %}</tr>
    {% endfor %}
  </table></div>
  {% endif %}
  {% else %}
  <p class="missing">No round completed.</p>
  {% endif %}
</section>

<div class="grid2">
<section id="roc">
  <h2>Pooled ROC curve</h2>
  {% if roc_plot %}
  <figure>{{ roc_plot | safe }}
    <figcaption>Exact pooled ROC from the sites' summed counts at {{ curves.test.thresholds | length if curves.test is defined else "a grid of" }} probability cut-offs.
    {% if point %}Operating point: threshold {{ point.threshold | rate }} ({{ point.rule }}), chosen on pooled validation data:
      sensitivity {{ point.tpr | rate }}, specificity {{ (1 - point.fpr) | rate }} on test.
    {% elif threshold is none %}No operating threshold (arg-max decision).{% endif %}</figcaption></figure>
  {% else %}
  {{ missing("ROC curve not recorded for this run (the sites did not send threshold-grid counts).") }}
  {% endif %}
</section>

<section id="calibration">
  <h2>Calibration</h2>
  {% if calibration_plot %}
  <figure>{{ calibration_plot | safe }}
    <figcaption>Reliability of the positive-class probability on the pooled test split: in each of the
      score bins, the share of images that were truly positive against the mean predicted probability.</figcaption></figure>
  {% else %}
  {{ missing("Calibration counts not recorded for this run.") }}
  {% endif %}
</section>
</div>

<section id="confusion">
  <h2>Confusion matrix (final round, pooled test)</h2>
  {% if confusion %}
  <p class="note">{% if threshold is not none %}At the operating threshold {{ threshold | rate }}{% if threshold_rule %} ({{ threshold_rule }}){% endif %}.
    {% elif final.threshold_rule %}Arg-max decision.{% else %}At the default decision rule (probability ≥ 0.5 for two classes; operating threshold not recorded for this run).{% endif %}
    Rows: true class; columns: predicted class.</p>
  <table class="confusion">
    <tr><th></th>{% for name in confusion.names %}<th>predicted {{ name }}</th>{% endfor %}<th>total</th></tr>
    {% for name, row, total in confusion.rows %}
    {% set i = loop.index0 %}
    <tr><th class="text">true {{ name }}</th>{% for v in row %}<td class="cell {{ 'hit' if loop.index0 == i else 'miss' }}">{{ v | count }}</td>{% endfor %}<td>{{ total | count }}</td></tr>
    {% endfor %}
  </table>
  {% else %}
  {{ missing("No confusion matrix recorded.") }}
  {% endif %}
</section>

<section id="privacy">
  <h2>Privacy: ε spent per site</h2>
  {% if not privacy.enabled %}
  <p class="missing">Differential privacy was off for this run: no ε was spent or accounted.</p>
  {% elif privacy.plot %}
  <div class="grid2">
  <figure>{{ privacy.plot | safe }}
    <figcaption>ε spent by each site after each round ({{ privacy.accountant }} accountant, δ = {{ privacy.delta }}), against the run's
      budget privacy.target-epsilon = {{ privacy.budget | number }}. A site's own lifetime budget is kept at the site and may be lower.</figcaption></figure>
  <div class="scroll"><table>
    <caption>ε spent after each round{% if privacy.budget is not none %} (budget {{ privacy.budget | number }}){% endif %}</caption>
    <tr><th class="text">site</th>{% for r in rounds %}<th>round {{ r.round }}</th>{% endfor %}{% if privacy.budget %}<th>share of budget</th>{% endif %}</tr>
    {% for line in privacy.lines %}
    {% set last = line.values | reject("none") | list | last %}
    <tr><td class="text">{{ line.label }}</td>{% for v in line.values %}<td>{{ v | epsilon }}</td>{% endfor %}
      {% if privacy.budget %}<td>{{ "%.1f" | format(100 * last / privacy.budget) }}%</td>{% endif %}</tr>
    {% endfor %}
  </table></div>
  </div>
  {% else %}
  <p class="missing">No site reported ε for this run.</p>
  {% endif %}
</section>

<section id="fairness">
  <h2>Fairness across patient groups and sites</h2>
  {% if fairness %}
  <p class="note">Sensitivity and specificity on the test split at the operating threshold, per patient group
    (from DICOM tags, computed at each site and sent as counts) and per site.
    Gaps above {{ fairness.flag_gap | rate }} are <span class="flag">flagged</span>.
    {% if fairness.min_group is not none %}Groups with fewer than {{ fairness.min_group }} images are suppressed.{% endif %}</p>
  <div class="grid2">
  {% for table in fairness.tables %}
    <div>
    <h3>{{ "Patient groups" if table.kind == "groups" else "Sites" }}</h3>
    <table>
      <tr><th class="text">{{ "group" if table.kind == "groups" else "site" }}</th><th>images</th><th>sensitivity</th><th>specificity</th></tr>
      {% for row in table.rows %}
      <tr{% if row.flagged %} class="flagged"{% endif %}><td class="text">{{ row.name }}{% if row.flagged %} <span class="flag">⚑</span>{% endif %}</td>
        <td>{{ row.n | count }}</td>
        <td{% if "sensitivity" in row.flagged %} class="flag"{% endif %}>{{ row.sensitivity | rate }}</td>
        <td{% if "specificity" in row.flagged %} class="flag"{% endif %}>{{ row.specificity | rate }}</td></tr>
      {% endfor %}
    </table>
    {% for gap in table.gaps %}
    <p class="{{ 'flag' if gap.flagged else 'note' }}">Largest {{ gap.metric }} gap: {{ gap.value | rate }}
      between {{ gap.between | join(" and ") }}{% if gap.flagged %} — above {{ fairness.flag_gap | rate }}{% endif %}.</p>
    {% endfor %}
    </div>
  {% endfor %}
  </div>
  {% if fairness.suppressed %}<p class="note">Suppressed (fewer than {{ fairness.min_group | number }} images): {{ fairness.suppressed | join(", ") }}.</p>{% endif %}
  {% else %}
  {{ missing("Fairness breakdown not recorded for this run.") }}
  {% endif %}
</section>

<section id="participation">
  <h2>What happened in each round</h2>
  {% if events %}
  <table>
    <tr><th>round</th><th class="text">site</th><th class="text">what happened</th><th class="text">reason</th></tr>
    {% for e in events %}
    <tr><td>{{ e.round }}</td><td class="text">{{ e.site }}</td><td class="text kind-{{ e.kind | replace(' ', '-') }}">{{ e.kind }}</td><td class="text">{{ e.reason }}</td></tr>
    {% endfor %}
  </table>
  <p class="note">Declined: the site refused the round (“privacy budget”: it would exceed its ε budget; “site policy”:
    the run breaks the site's own policy; “app not approved”: the site's gate refused this app's code).
    Failed: no reply or an error (“lost contact”: the site stopped sending heartbeats). Rejected: the server refused
    the site's update (validation). Not evaluated: the site gave no evaluation result. Model kept: too few valid
    updates, the global model stayed as it was. Resumed / stopped: the coordinator restarted from its checkpoint, or
    stopped because too few sites were online (the round shown is the next one).</p>
  {% elif rounds %}
  <p class="note">Every sampled site took part in every round.</p>
  {% else %}
  <p class="missing">No round completed.</p>
  {% endif %}
</section>

<section id="notes">
  <h2>How to read this report</h2>
  <p class="note">Per-image scores never leave a site. {% if curves or no_site_tests %}Pooled AUC and ROC come from the sites'
    summed true/false positive counts at a grid of probability cut-offs; sensitivity, specificity, precision and F1 from
    the summed confusion matrices at the operating threshold.{% else %}In this run pooled AUC is the example-weighted mean
    of the site AUCs; sensitivity, specificity, precision, F1 and balanced accuracy come from the summed confusion matrices
    (two classes: class 1 positive at probability ≥ 0.5; more classes: macro one-vs-rest).{% endif %}
    ε is per site with <span class="nowrap">δ = {{ privacy.delta }}</span>; “–” marks a value not recorded or undefined (e.g. precision with no positive calls).</p>
</section>
</main>
</body>
</html>
"""
