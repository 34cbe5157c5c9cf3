"""The review page for a label file: every mask drawn over its image, doubtful instances first.

`command` is `mal gallery` (read and check the files, then write); `label_files` reads a COCO file and refuses what
the page cannot show; `write` writes the thumbnails and then the page; `thumbnails` draws the masks over an image;
`html_page` is the self-contained HTML.
"""
