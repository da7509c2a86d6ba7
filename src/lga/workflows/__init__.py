"""Workflows over the whole pipeline: reproduce a table, sweep sizes, pretrain the toy CLIP."""
