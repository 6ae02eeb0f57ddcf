"""What a run learns from and asks about: target datasets, vocabularies of concepts, their
descriptors, the sentence-embedding model. Imports the crawl's image loading only."""
