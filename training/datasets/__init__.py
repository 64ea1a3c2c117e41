"""Training and evaluation data: clips of video frames with video-level tags, one module per on-disk layout
(`cityscapes`, `camvid`, `synth_drives`), the `Clip` they all return and its tags (`clips`), and the layouts by name
(`layouts`). Flow and the frame windows are `training.flow_snippets`; what training sees is `training.weak_dataset`."""
