"""Models: loading a language or vision-language model (the bundled GGUF default, a local folder or a
hub id; safetensors only), its configuration and fingerprint."""
