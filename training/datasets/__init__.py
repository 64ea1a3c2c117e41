"""Training and evaluation data: clips of video frames with video-level tags, one module per on-disk layout
(`cityscapes`, `camvid`, `synth_drives`, and `video` for video files and folders of frames), the `Clip` they all
return and its tags (`clips`), and the layouts by name (`layouts`). Flow and the frame windows are
`wsvs_training.flow_snippets`; what training sees is `wsvs_training.weak_dataset`."""
