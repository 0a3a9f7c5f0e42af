"""The names of the files onnxopt puts in the folders it makes.

Their own module because three others read them: the manifest writes `onnxopt.json` and lists a
staged folder's entries except the marker; leftovers and outputs find a dead run's staged folder
by the marker and a moved-aside output by its manifest. Each of those imports this one, so none
has to import another to learn a name (manifest and leftovers once imported each other).
"""

MANIFEST_NAME = "onnxopt.json"
STAGING_MARK = ".onnxopt-staging"  # inside a staged folder: the pid of the run that made it
