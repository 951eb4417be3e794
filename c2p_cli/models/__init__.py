"""What turns depth maps into labels: open_clip encoders and the folded stem (encoders), label sets and
prompt features (prompts), the zero-shot classifier (classifier), the few-shot adapters (adapters),
and the fingerprint of the renderer that trained weights record (render_version)."""
