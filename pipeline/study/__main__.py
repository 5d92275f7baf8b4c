from pipeline.study.cli import main

main()
