"""Blinded reader study: do experts tell real from synthetic tiles apart? (papers 003 and 004)

`create` samples real and synthetic images into a blinded study folder (SQLite + opaque PNGs),
`app` serves one private page per rater, `results` scores the answers. Only `store` and `results`
ever read the ground truth; no served page, URL, file name or header carries it.
"""
