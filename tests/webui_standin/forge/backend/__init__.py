"""Stand-in for Forge's ``backend`` package (lllyasviel/stable-diffusion-webui-forge, main dfdcbab6):
the parts the WebUI side and extensions touch -- text processing engines, diffusion-engine-like models,
``memory_management.load_model_gpu`` and the clip patcher's LoRA. Importable only in Forge mode
(``standin.WebUI("forge-...")`` puts ``tests/webui_standin/forge`` on ``sys.path``)."""
