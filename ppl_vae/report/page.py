"""The page's HTML: one jinja2 template with autoescape, the only place markup meets values.

Every value from a run (names, attrs, configs, hyper-parameters, site names,
error messages) reaches the page through this template, which escapes it; the
figures are PNG bytes in ``data:`` URIs.  The page runs no script, and its
Content-Security-Policy forbids any (an injected ``<script>`` could not run
even if escaping were bypassed).
"""

from __future__ import annotations

import jinja2

#: no scripts, no remote anything: only inline styles and data: images
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'none'; object-src 'none'; img-src data:; "
                           "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 2px solid #ccc; }
h3 { font-size: 1.12em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.9em; }
.headline { font-size: 1.1em; background: #f3f6fb; border-left: 4px solid #0173b2; padding: 0.45em 0.8em; margin: 0.4em 0; }
.flag { font-size: 0.85em; padding: 0.05em 0.45em; border-radius: 3px; margin-left: 0.4em; white-space: nowrap; }
.flag.no { background: #fbe3d6; color: #8a3b00; } .flag.yes { background: #dff2e9; color: #02593b; }
.flag.unknown { background: #eee; color: #555; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; } th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.current td { background: #fff4cc; font-weight: bold; }
table.change td { white-space: nowrap; }
.scroll { overflow-x: auto; max-width: 100%; }
.figs { display: flex; flex-wrap: wrap; gap: 0.5em 1.5em; align-items: flex-start; }
figure { margin: 0.8em 0; max-width: 100%; } figcaption { color: #555; font-size: 0.88em; max-width: 640px; }
img { max-width: 100%; height: auto; display: block; }
code { background: #f4f4f4; padding: 0 0.2em; overflow-wrap: anywhere; }
dl.words dt { font-weight: bold; } dl.words dd { margin: 0 0 0.3em 1.2em; }
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css | safe }}</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">ppl_vae {{ version }}. A latent dimension counts as collapsed when its data-mean KL(q || p) is below
{{ epsilon }} nats. The theory is the closed-form optimum of the linear model with the same data and
hyper-parameters (Dang et al., ICLR 2024); the models, closed forms and metrics are explained in
{% if science_href %}<a href="{{ science_href }}">docs/science.md</a>{% else %}docs/science.md of the ppl_vae project{% endif %}.</p>
<dl class="words" id="words">
{% for term, meaning in words %}<dt>{{ term }}</dt><dd>{{ meaning }}</dd>
{% endfor %}</dl>
<div id="headlines">
{% for run in runs %}<p class="headline"><b>{{ run.name }}</b>: {{ run.headline }}{{ flag(run) }}</p>
{% endfor %}</div>
<h2>Metrics</h2>
<div class="scroll"><table id="metrics" class="metrics"><thead><tr>
{% for column in table.columns %}<th class="{{ 'text' if column in table.text_columns else '' }}">{{ column }}</th>{% endfor %}
</tr></thead><tbody>
{% for row in table.rows %}<tr>{% for column in table.columns %}<td class="{{ 'text' if column in table.text_columns else '' }}">{{ row[column] }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
{% for family in families %}
<section class="family" id="family-{{ family.key }}">
<h2>{{ family.title }}</h2>
{% if family.comparison %}<div class="comparison" id="comparison-{{ family.key }}"><h3>Across these runs</h3>
<div class="figs">{% for fig in family.comparison %}{{ figure(fig) }}{% endfor %}</div></div>{% endif %}
{% for run in family.runs %}
<section class="run" id="run-{{ run.anchor }}">
<h3>{{ run.name }}</h3>
<p class="headline" data-run="{{ run.name }}">{{ run.headline }}{{ flag(run) }}</p>
<p class="meta">{{ run.model }}; hyper-parameters <code>{{ run.hyperparameters }}</code>; data <code>{{ run.data }}</code>; seed <code>{{ run.seed }}</code>.</p>
<div class="what-to-change"><h4>What to change</h4>
{% if run.changes %}<p class="meta">{{ run.change_label }}</p>
{% for change in run.changes %}<div class="scroll"><table class="change"><thead><tr><th class="text">to keep k {{ change.site }} dimensions active</th>
{% for head in change.heads %}<th>{{ head }}</th>{% endfor %}<th class="text"></th></tr></thead><tbody>
{% for row in change.rows %}<tr class="{{ 'current' if row.current else '' }}"><td class="text">k = {{ row.k }}</td>
{% for cell in row.cells %}<td>{{ cell }}</td>{% endfor %}<td class="text">{{ row.note }}</td></tr>
{% endfor %}</tbody></table></div>{% endfor %}
{% else %}<p class="meta">{{ run.change_note }}</p>{% endif %}</div>
<div class="figs">{% for fig in run.figures %}{{ figure(fig) }}{% endfor %}</div>
</section>
{% endfor %}
</section>
{% endfor %}
</body></html>
"""

_MACROS = """
{% macro figure(fig) -%}
{% if fig.png %}<figure><img alt="{{ fig.caption }}" src="data:image/png;base64,{{ fig.png }}"><figcaption>{{ fig.caption }}</figcaption></figure>
{%- else %}<p class="meta not-drawn">({{ fig.caption }}: not drawn, {{ fig.error }})</p>{% endif %}
{%- endmacro %}
{% macro flag(run) -%}
{% if run.converged is sameas true %}<span class="flag yes">converged</span>
{%- elif run.converged is sameas false %}<span class="flag no">did not converge: counts not final</span>
{%- else %}<span class="flag unknown">convergence not judged</span>
{%- endif %}
{%- endmacro %}
"""

_ENVIRONMENT = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)


def render(**context) -> str:
    """The page from ``context`` (see :func:`ppl_vae.report.html.build_html`); every value is escaped."""
    macros = _ENVIRONMENT.from_string(_MACROS).module
    template = _ENVIRONMENT.from_string(_TEMPLATE)
    return template.render(csp=CONTENT_SECURITY_POLICY, css=CSS, figure=macros.figure, flag=macros.flag, **context)
