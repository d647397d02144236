"""``dualist push``: upload a saved model folder (with its model card) to the Hugging Face Hub."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dualist.errors import ConfigError, DualistError, MissingDependencyError

__all__ = ["push_to_hub", "HubUnavailableError"]

logger = logging.getLogger(__name__)


class HubUnavailableError(DualistError):
    """The Hub cannot be reached (offline mode, or no network)."""


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                commit_message: str = "Upload dualist model") -> str:
    """Create ``repo_id`` on the Hub if needed and upload ``folder``; returns the repository URL.

    The folder must be a saved dualist model (``dualist.json``); its ``README.md`` model card is
    (re)written first, so what is uploaded is described. Offline (``HF_HUB_OFFLINE=1``) or without a
    network, fails with :class:`HubUnavailableError` before anything is half-uploaded.
    """
    from dualist.models.card import write_model_card

    folder = Path(folder)
    if not (folder / "dualist.json").is_file():
        raise ConfigError(f"{folder} is not a saved dualist model (no dualist.json); pass the model/ folder "
                          "written by 'dualist train-student' or 'dualist train-teacher'")
    if "/" not in repo_id or repo_id.count("/") != 1:
        raise ConfigError(f"repo id must look like 'user-or-org/name', got {repo_id!r}")
    if _offline():
        raise HubUnavailableError("cannot push: the Hugging Face Hub is switched off on this machine "
                                  "(HF_HUB_OFFLINE=1). Unset HF_HUB_OFFLINE on a machine with a network and "
                                  f"rerun: dualist push {folder} --repo-id {repo_id}")
    try:
        from huggingface_hub import HfApi
    except ImportError as e:
        raise MissingDependencyError("huggingface_hub", "dualist push") from e
    write_model_card(folder)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message=commit_message)
    except Exception as e:  # the client raises its own, requests' or httpx's connection errors
        if _is_network_error(e):
            raise HubUnavailableError(f"cannot reach the Hugging Face Hub ({type(e).__name__}: {e}). This machine "
                                      "looks offline; the model folder is unchanged. Rerun on a machine with a "
                                      f"network: dualist push {folder} --repo-id {repo_id}") from e
        raise DualistError(f"uploading {folder} to {repo_id} failed: {type(e).__name__}: {e}") from e
    logger.info("pushed %s to %s", folder, url)
    return str(url)


def _is_network_error(e: BaseException) -> bool:
    names = {"ConnectionError", "ConnectError", "ConnectTimeout", "Timeout", "TimeoutException", "ProxyError",
             "NameResolutionError", "MaxRetryError", "OfflineModeIsEnabled", "gaierror", "ConnectionRefusedError",
             "NewConnectionError", "ReadTimeout", "NetworkError"}
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if any(c.__name__ in names for c in type(e).__mro__) or isinstance(e, OSError):
            return True
        e = e.__cause__ or e.__context__
    return False
