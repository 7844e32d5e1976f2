

def hf_checkpoint_dir(model_path, what: str):
    """The HF checkpoint dir (save_pretrained layout); KitError naming config.json when it is not one."""
    from pathlib import Path

    from evalkit.errors import KitError

    mp = Path(model_path)
    if not (mp / "config.json").is_file():
        raise KitError(f"{mp / 'config.json'} not found; --model_path must be an HF {what} checkpoint dir.")
    return mp
