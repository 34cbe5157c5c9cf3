"""The review page for a label file: one card per mask, paged, filtered and sorted, reviewed with the keyboard.

`command` is `mal gallery` (read and check the files, then write); `label_files` reads a COCO file and refuses what
the page cannot show; `write` checks everything, then writes the cards, data.js and index.html; `crop_jobs` draws
the cards over a process pool, `crops` draws one (the instance cut from the full-resolution image), `rle_window`
reads a mask inside a window straight from its RLE; `page_data` is data.js, `html_page` and `page_script` are
index.html. docs/REVIEW.md is the reviewer's guide.
"""
