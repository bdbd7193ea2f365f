"""The run page people look at: every step's report on one self-contained HTML page (`reports/index.html`),
built by `page.build_run_page` from the flows and `detops report` only."""
