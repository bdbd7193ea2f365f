"""The page's only stylesheet, inlined: no font, framework or icon is fetched, so it looks the same offline."""

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
header, main > section, #tools { background: #fff; margin: 16px auto; max-width: 1200px; padding: 12px 24px;
                                 border: 1px solid #d0d7de; border-radius: 6px; }
h1 { font-size: 22px; margin: 8px 0 12px; }
h2 { font-size: 18px; margin: 4px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
thead th { background: #f0f3f6; }
table.facts th { background: #f6f8fa; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; background: #f0f3f6; padding: 1px 4px;
       border-radius: 4px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; background: #eaeef2; }
.badge.good { background: #dafbe1; color: #116329; }
.badge.bad { background: #ffebe9; color: #a40e26; }
.muted { color: #59636e; }
.written { color: #59636e; font-size: 12px; font-weight: normal; margin-left: 8px; }
figure { margin: 12px 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #59636e; font-size: 12px; }
details { margin: 8px 0; }
summary { cursor: pointer; }
"""
