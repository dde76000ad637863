"""Reports: prune a model at several amounts and render the results as one self-contained HTML
page (``collect`` gathers the numbers, ``html`` draws them).
"""
