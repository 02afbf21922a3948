"""``runtime.experimental``: Ray's ``ray.experimental`` names that exist here
(``tqdm_ray``: progress bars of tasks and actors, drawn by their driver)."""
